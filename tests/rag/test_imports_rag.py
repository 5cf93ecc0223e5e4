"""The RAG modules stay light to import: torch, onnxruntime, mlflow and ray load inside functions."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "onnxruntime", "sentence_transformers", "transformers", "mlflow", "ray", "numpy", "psycopg")


@pytest.mark.parametrize(
    "module",
    [
        "flightline.embeddings",
        "flightline.chunking",
        "flightline.ingestion",
        "flightline.retrieval",
        "flightline.rag_eval",
        "flightline.schemas_rag",
        "flightline.cli_rag",
    ],
)
def test_rag_module_imports_no_heavy_library(module: str) -> None:
    probe = f"import {module}, sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
