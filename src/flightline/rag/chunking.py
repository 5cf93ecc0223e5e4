"""Split documents into overlapping word windows and fingerprint each chunk.

Windows count words, not model tokens: the split then needs no tokenizer, is stable across model
versions, and 200 words stay near the model's 256-token limit for English prose. The content hash
covers everything that determines a chunk's vector (model, the text the model sees), so a rerun
re-embeds exactly the chunks whose hash is new.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flightline.platform.errors import FlightlineConfigError


@dataclass(frozen=True)
class Chunk:
    """One window of a document: its position, its text, and the hash of what gets embedded."""

    doc_id: str
    chunk_index: int
    text: str
    content_hash: str

    @property
    def chunk_id(self) -> str:
        return f"{self.doc_id}#{self.chunk_index}"


def validate_chunk_settings(size: int, overlap: int) -> None:
    """Raises FlightlineConfigError unless 0 <= overlap < size."""
    if size < 1 or not 0 <= overlap < size:
        raise FlightlineConfigError(
            f"chunk overlap must be at least 0 and below the chunk size; got size={size}, overlap={overlap}"
        )


def split_words(text: str, *, size: int, overlap: int) -> list[str]:
    """Windows of ``size`` words, each starting ``size - overlap`` words after the previous.

    The last window is dropped when it would only repeat the previous window's tail. Whitespace is
    normalised to single spaces. An empty text gives no windows.
    """
    validate_chunk_settings(size, overlap)
    words = text.split()
    if not words:
        return []
    step = size - overlap
    windows = []
    for start in range(0, len(words), step):
        windows.append(" ".join(words[start : start + size]))
        if start + size >= len(words):
            break
    return windows


def embedding_text(title: str | None, text: str) -> str:
    """What the model embeds for a chunk: the document title, then the chunk (as BEIR does)."""
    return f"{title}\n{text}" if title else text


def content_hash(model_id: str, title: str | None, text: str) -> str:
    """sha256 of the model id and the embedded text: equal hashes mean equal vectors."""
    digest = hashlib.sha256()
    for part in (model_id, title or "", text):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def chunk_document(doc_id: str, title: str | None, text: str, *, size: int, overlap: int, model_id: str) -> list[Chunk]:
    """The chunks of one document, with content hashes. A document with no words gets no chunks."""
    return [
        Chunk(doc_id=doc_id, chunk_index=index, text=window, content_hash=content_hash(model_id, title, window))
        for index, window in enumerate(split_words(text, size=size, overlap=overlap))
    ]
