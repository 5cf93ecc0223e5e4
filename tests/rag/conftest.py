"""Shared RAG fixtures: the loaded embedder and a labelled SciFact subset in the platform's Postgres.

The subset keeps the suite inside its time budget on 2 cores: the documents relevant to the first
250 training claims plus 250 other abstracts (about 750 chunks). The full corpus figures are in the
README and come from `flightline rag eval` on the full collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flightline.platform.config import Settings
    from flightline.rag.embeddings import Embedder

SUBSET_COLLECTION = "scifact_subset"
_SUBSET_CLAIMS = 250
_SUBSET_DISTRACTORS = 250


@pytest.fixture(scope="session")
def embedder(platform: Settings) -> Embedder:
    """The configured (ONNX int8) embedder; the first call exports the graph under the test home."""
    from flightline.rag.embeddings import get_embedder

    return get_embedder(platform)


@pytest.fixture(scope="session")
def scifact_subset(platform: Settings, embedder: Embedder) -> Iterator[str]:
    """Ingest the SciFact subset once per session; yields the collection name."""
    from flightline.rag.documents import load_documents
    from flightline.rag.evaluation import load_qrels
    from flightline.rag.ingestion import drop_collection, sync_collection

    scifact = platform.shared_data_dir / "scifact"
    qrels = load_qrels(scifact / "qrels" / "train.tsv")
    claims = sorted(qrels, key=int)[:_SUBSET_CLAIMS]
    relevant = {doc for claim in claims for doc in qrels[claim]}
    documents = load_documents(scifact)
    distractors = [d.doc_id for d in documents if d.doc_id not in relevant][:_SUBSET_DISTRACTORS]
    keep = relevant | set(distractors)
    subset = [d for d in documents if d.doc_id in keep]
    sync_collection(platform, SUBSET_COLLECTION, subset, source=str(scifact), embedder=embedder)
    yield SUBSET_COLLECTION
    drop_collection(platform, SUBSET_COLLECTION)
