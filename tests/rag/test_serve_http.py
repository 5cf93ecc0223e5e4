"""The RAG endpoints on the platform's real Ray Serve over real HTTP (router -> RetrievalService)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rag_url(platform: Settings, scifact_subset: str) -> str:
    """The platform's Ray Serve router, which mounts RetrievalService (ray_serve/rag.py) by handle."""
    assert platform.serve_rag, "the platform must mount RAG (FLIGHTLINE_SERVE_RAG=true)"
    return platform.serve_url


def test_search_returns_one_entry_per_chunk_best_first(rag_url: str, scifact_subset: str) -> None:
    body = {
        "query": "1 in 5 million in UK have abnormal PrP positivity.",
        "k": 5,
        "mode": "hybrid",
        "collection": scifact_subset,
        "filters": {},
    }
    response = httpx.post(f"{rag_url}/v1/rag/search", json=body, timeout=30)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 5
    assert results[0]["doc_id"] == "13734012"
    assert len({r["chunk_id"] for r in results}) == 5
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert {"doc_id", "chunk_id", "score", "text", "title", "metadata"} <= set(results[0])


def test_search_filters_by_doc_id(rag_url: str, scifact_subset: str) -> None:
    body = {
        "query": "prion protein",
        "k": 10,
        "mode": "dense",
        "collection": scifact_subset,
        "filters": {"doc_id": ["13734012"]},
    }
    results = httpx.post(f"{rag_url}/v1/rag/search", json=body, timeout=30).json()["results"]
    assert results and {r["doc_id"] for r in results} == {"13734012"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"query": "", "collection": "scifact"}, "query"),
        ({"query": "q", "mode": "semantic"}, "mode"),
        ({"query": "q", "k": 0}, "k"),
        ({"query": "q", "collection": "bad name;"}, "collection"),
        ({"k": 5}, "query"),
        # PostgreSQL takes no NUL in text and no NaN in jsonb: these failed the query and answered 500
        ({"query": "vitamin d\u0000"}, "query"),
        ({"query": "q", "filters": {"doc_id": ["1", "a\u0000"]}}, "filters"),
        ('{"query": "q", "filters": {"year": NaN}}', "filters"),
    ],
)
def test_bad_search_input_gets_422_with_the_reason(rag_url: str, body: dict[str, object] | str, reason: str) -> None:
    url = f"{rag_url}/v1/rag/search"
    if isinstance(body, str):  # JSON that httpx would not write (NaN)
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    else:
        response = httpx.post(url, json=body, timeout=30)
    assert response.status_code == 422
    assert reason in {str(part) for error in response.json()["detail"] for part in error["loc"]}


def test_unknown_collection_gets_404(rag_url: str) -> None:
    response = httpx.post(f"{rag_url}/v1/rag/search", json={"query": "q", "collection": "nope"}, timeout=30)
    assert response.status_code == 404
    assert "collection 'nope' does not exist" in response.json()["detail"]


def test_embeddings_are_openai_shaped_and_normalised(rag_url: str) -> None:
    response = httpx.post(
        f"{rag_url}/v1/embeddings",
        json={
            "input": ["a cat sat on the mat", "quantum chromodynamics"],
            "model": "sentence-transformers/all-MiniLM-L6-v2",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert [item["index"] for item in body["data"]] == [0, 1]
    vector = body["data"][0]["embedding"]
    assert len(vector) == 384 and abs(sum(x * x for x in vector) - 1) < 1e-3
    assert body["usage"]["prompt_tokens"] > 0


def test_the_largest_embedding_request_the_schema_allows_is_answered(rag_url: str) -> None:
    """256 inputs of 20,000 characters, 15 MB in UTF-8: the router hands it to RetrievalService over gRPC,
    whose 4 MB default limit answered 500 (RESOURCE_EXHAUSTED)."""
    from flightline.rag.schemas import MAX_EMBEDDING_INPUT_CHARS, MAX_EMBEDDING_INPUTS

    inputs = ["€" * MAX_EMBEDDING_INPUT_CHARS] * MAX_EMBEDDING_INPUTS
    response = httpx.post(f"{rag_url}/v1/embeddings", json={"input": inputs}, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert [item["index"] for item in response.json()["data"]] == list(range(MAX_EMBEDDING_INPUTS))


def test_embeddings_reject_unknown_model_and_bad_input(rag_url: str) -> None:
    assert httpx.post(f"{rag_url}/v1/embeddings", json={"input": "x", "model": "gpt-4"}, timeout=30).status_code == 404
    assert httpx.post(f"{rag_url}/v1/embeddings", json={"input": []}, timeout=30).status_code == 422


def test_search_answers_503_with_the_reason_while_the_document_store_refuses_connections(
    rag_url: str, platform: Settings, scifact_subset: str
) -> None:
    """A search waited the connection pool's 30 s, then was a 500 without a reason (and the ServiceError it
    now raises in RetrievalService could not cross to the router: it did not unpickle)."""
    import time

    from flightline.platform.database import connect

    body = {"query": "prion protein", "k": 3, "collection": scifact_subset}
    db = platform.warehouse_db
    with connect(platform, "postgres", autocommit=True) as admin:
        admin.execute(f'alter database "{db}" allow_connections false')
        try:
            admin.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (db,))
            began = time.monotonic()
            response = httpx.post(f"{rag_url}/v1/rag/search", json=body, timeout=60)
            waited = time.monotonic() - began
        finally:
            admin.execute(f'alter database "{db}" allow_connections true')
    assert response.status_code == 503, response.text
    assert response.json()["detail"].startswith("postgres: no document-store connection within 5 s")
    assert waited < 20
    # back as soon as the store is: the pool replaces the connections the outage closed
    assert httpx.post(f"{rag_url}/v1/rag/search", json=body, timeout=30).status_code == 200


def test_search_answers_503_with_the_reason_while_a_lock_holds_the_document_store(
    rag_url: str, platform: Settings, scifact_subset: str
) -> None:
    """A search blocked by a lock (an analyst's `lock table`, a migration) would wait as long as the lock is
    held, with a slot of RetrievalService and one of the router; its statement gives up after
    ``rag_search_timeout_s``."""
    import time

    from flightline.platform.database import connect

    body = {"query": "prion protein", "k": 3, "collection": scifact_subset}
    with connect(platform, platform.warehouse_db) as conn:  # one transaction, held while the search runs
        conn.execute("lock table rag_chunks in access exclusive mode")
        began = time.monotonic()
        response = httpx.post(f"{rag_url}/v1/rag/search", json=body, timeout=120)
        waited = time.monotonic() - began
    assert response.status_code == 503, response.text
    assert response.json()["detail"] == (
        f"postgres: the document store did not answer the search within {platform.rag_search_timeout_s:g} s "
        "(a lock or an overloaded database); try again shortly"
    )
    assert platform.rag_search_timeout_s <= waited < platform.rag_search_timeout_s + 10
    assert httpx.post(f"{rag_url}/v1/rag/search", json=body, timeout=30).status_code == 200  # the lock is gone
