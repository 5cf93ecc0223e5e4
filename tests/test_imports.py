"""`import flightline` and DAG parsing must stay light: heavy libraries load inside functions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flightline.platform.config import PROJECT_DIR

HEAVY = ("torch", "feast", "great_expectations", "mlflow", "ray", "pyspark", "lightgbm", "dbt", "sentence_transformers",
         "deltalake", "pandas", "sklearn", "onnxruntime", "transformers", "gguf", "vllm")


def _loaded_heavy_modules(code: str) -> list[str]:
    # the result goes on its own marked last line: libraries may print warnings to stdout on import
    probe = f"{code}\nimport sys\nprint('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    marked = result.stdout.strip().splitlines()[-1]
    assert marked.startswith("HEAVY:"), result.stdout
    return [name for name in marked.removeprefix("HEAVY:").split(",") if name]


@pytest.mark.parametrize(
    "module", ["flightline", "flightline.platform.config", "flightline.cli", "flightline.platform.stack"]
)
def test_flightline_modules_import_no_heavy_library(module: str) -> None:
    assert _loaded_heavy_modules(f"import {module}") == []


@pytest.mark.parametrize("dag_file", sorted(p.name for p in (PROJECT_DIR / "dags").glob("*.py")))
def test_dag_files_import_no_heavy_library_at_parse_time(dag_file: str) -> None:
    code = f"import runpy; runpy.run_path({str(PROJECT_DIR / 'dags' / dag_file)!r}, run_name='dag_parse')"
    assert _loaded_heavy_modules(code) == []


def test_feast_imports_without_torch_for_serving_and_torch_stays_importable() -> None:
    """Feast alone loads torch (the reason for the helper: if this changes, the helper can go)."""
    assert "torch" in _loaded_heavy_modules("import feast")
    code = "from flightline.features.store import import_feast_without_torch\nimport_feast_without_torch()"
    loaded = _loaded_heavy_modules(code)
    assert "feast" in loaded and "torch" not in loaded
    assert "torch" in _loaded_heavy_modules(f"{code}\nimport torch")
