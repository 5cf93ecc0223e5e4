"""The RAG modules stay light to import: torch, onnxruntime, mlflow and ray load inside functions."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import flightline.rag

HEAVY = ("torch", "onnxruntime", "sentence_transformers", "transformers", "mlflow", "ray", "numpy", "psycopg")


@pytest.mark.parametrize(
    "module",
    [f"flightline.rag.{m.name}" for m in pkgutil.iter_modules(flightline.rag.__path__)] + ["flightline.cli.rag"],
)
def test_rag_module_imports_no_heavy_library(module: str) -> None:
    probe = f"import {module}, sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
