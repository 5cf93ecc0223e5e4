"""Request validation at the API boundary."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flightline.rag.schemas import EmbeddingRequest, SearchRequest


def test_search_defaults() -> None:
    request = SearchRequest(query="vitamin d")
    assert (request.k, request.mode, request.collection, request.filters) == (10, "hybrid", "scifact", {})


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"query": ""},
        {"query": "   "},
        {"query": "q", "k": 0},
        {"query": "q", "k": 10_000},
        {"query": "q", "mode": "semantic"},
        {"query": "q", "collection": "Robert'); drop table rag_chunks;--"},
        {"query": "q", "filters": {"year": {"gt": 2000}}},
        {"query": "q", "filters": {"year": []}},
        {"query": "q", "unexpected": 1},
        {"query": "x" * 5000},
    ],
)
def test_bad_search_requests_are_rejected(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SearchRequest.model_validate(payload)


def test_filters_accept_scalars_and_lists() -> None:
    request = SearchRequest(query="q", filters={"format": "markdown", "doc_id": ["a", "b"], "year": 2020})
    assert request.filters["doc_id"] == ["a", "b"]


@pytest.mark.parametrize("payload", [{"input": ""}, {"input": []}, {"input": [""]}, {"input": ["a"] * 300}, {}])
def test_bad_embedding_requests_are_rejected(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EmbeddingRequest.model_validate(payload)


def test_openai_clients_extra_fields_are_ignored() -> None:
    request = EmbeddingRequest.model_validate({"input": ["a", "b"], "model": "all-MiniLM-L6-v2", "user": "u1"})
    assert request.input == ["a", "b"]
