"""Request and response schemas of the embeddings and RAG search APIs.

They validate at the boundary: a request that passes them is safe to run (bounded sizes, a
collection name that is a plain identifier, filters of scalars), so HTTP layers answer 422 with
pydantic's reason and flightline code below them trusts its input.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator

COLLECTION_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
"""Collection names: lowercase identifiers, so they are safe in logs, asset URIs and MLflow names."""


def check_collection_name(name: str) -> None:
    """Refuse a name the search API could never reach (ingestion's check; requests validate by pattern).

    Raises:
        FlightlineConfigError: the name does not match :data:`COLLECTION_PATTERN`.
    """
    import re

    from flightline.platform.errors import FlightlineConfigError

    if not re.fullmatch(COLLECTION_PATTERN, name):
        raise FlightlineConfigError(
            f"collection name {name!r} is not a lowercase identifier: a letter, then up to 62 letters, digits, _ or -"
        )

SearchMode = Literal["dense", "lexical", "hybrid"]
FilterScalar = str | int | FiniteFloat | bool  # NaN and Infinity have no JSON (jsonb) form
MAX_QUERY_CHARS = 4000
MAX_K = 200
MAX_EMBEDDING_INPUTS = 256
MAX_EMBEDDING_INPUT_CHARS = 20_000


class SearchRequest(BaseModel):
    """``POST /v1/rag/search``.

    ``filters`` match chunk metadata by equality; a list value matches any of its items. The key
    ``doc_id`` filters on the document id itself.
    """

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=10, ge=1, le=MAX_K)
    mode: SearchMode = "hybrid"
    collection: str = Field(default="scifact", pattern=COLLECTION_PATTERN)
    filters: dict[str, FilterScalar | list[FilterScalar]] = Field(default_factory=dict, max_length=16)

    @field_validator("query")
    @classmethod
    def _query_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query is blank")
        _refuse_nul(value, "query")
        return value

    @field_validator("filters")
    @classmethod
    def _filter_lists_bounded(
        cls, value: dict[str, FilterScalar | list[FilterScalar]]
    ) -> dict[str, FilterScalar | list[FilterScalar]]:
        for key, item in value.items():
            if not key or len(key) > 64:
                raise ValueError(f"filter key {key!r} must have 1 to 64 characters")
            if isinstance(item, list) and not 1 <= len(item) <= 100:
                raise ValueError(f"filter {key!r} must list 1 to 100 values")
            for text in (key, *(item if isinstance(item, list) else [item])):
                if isinstance(text, str):
                    _refuse_nul(text, f"filter {key!r}")
        return value


def _refuse_nul(text: str, what: str) -> None:
    """PostgreSQL text cannot hold a NUL: refused here, it is a 422 instead of a failed query."""
    if "\x00" in text:
        raise ValueError(f"{what} contains a NUL character")


class SearchResult(BaseModel):
    """One chunk, best first in the response."""

    doc_id: str
    chunk_id: str
    chunk_index: int
    score: float
    text: str
    title: str | None = None
    metadata: dict[str, object] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    collection: str
    mode: SearchMode
    results: list[SearchResult]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings`` in the OpenAI shape (token-id inputs are not supported)."""

    model_config = ConfigDict(extra="ignore")  # OpenAI clients send `user`, `dimensions`, ...

    input: str | list[str] = Field(min_length=1)
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input")
    @classmethod
    def _inputs_bounded(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request, got {len(texts)}")
        for text in texts:
            if not text:
                raise ValueError("inputs must be non-empty strings")
            if len(text) > MAX_EMBEDDING_INPUT_CHARS:
                raise ValueError(f"an input has {len(text)} characters; at most {MAX_EMBEDDING_INPUT_CHARS}")
        return value


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
