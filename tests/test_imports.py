"""`import flightline` and DAG parsing must stay light: heavy libraries load inside functions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flightline.config import PROJECT_DIR

HEAVY = ("torch", "feast", "great_expectations", "mlflow", "ray", "pyspark", "lightgbm", "dbt", "sentence_transformers",
         "deltalake", "pandas", "sklearn", "onnxruntime")


def _loaded_heavy_modules(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [name for name in result.stdout.strip().split(",") if name]


@pytest.mark.parametrize("module", ["flightline", "flightline.config", "flightline.cli", "flightline.stack"])
def test_flightline_modules_import_no_heavy_library(module: str) -> None:
    assert _loaded_heavy_modules(f"import {module}") == []


@pytest.mark.parametrize("dag_file", sorted(p.name for p in (PROJECT_DIR / "dags").glob("*.py")))
def test_dag_files_import_no_heavy_library_at_parse_time(dag_file: str) -> None:
    code = f"import runpy; runpy.run_path({str(PROJECT_DIR / 'dags' / dag_file)!r}, run_name='dag_parse')"
    assert _loaded_heavy_modules(code) == []
