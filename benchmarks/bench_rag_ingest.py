"""Ingestion throughput vs the raw embedding model on the same texts, and unchanged re-ingest time.

Needs a running platform (`flightline up`). Ingests the first --docs SciFact abstracts into a
scratch collection, which it drops at the end. Prints JSON.

    python benchmarks/bench_rag_ingest.py --docs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flightline.platform.config import Settings
    from flightline.rag.embeddings import Embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=1000, help="SciFact documents to ingest")
    parser.add_argument("--collection", default="bench_ingest")
    parser.add_argument(
        "--full-collection",
        default="scifact",
        help="an ingested full SciFact collection to re-ingest unchanged (skipped if absent)",
    )
    args = parser.parse_args()

    from flightline.platform.config import get_settings
    from flightline.rag.chunking import chunk_document, embedding_text
    from flightline.rag.documents import load_documents
    from flightline.rag.embeddings import get_embedder
    from flightline.rag.ingestion import drop_collection, sync_collection

    settings = get_settings()
    documents = load_documents(settings.shared_data_dir / "scifact")[: args.docs]
    embedder = get_embedder(settings)
    model_id = f"{embedder.model_name}@{embedder.model_version}"
    texts = [
        embedding_text(d.title, chunk.text)
        for d in documents
        for chunk in chunk_document(
            d.doc_id,
            d.title,
            d.text,
            size=settings.rag_chunk_size,
            overlap=settings.rag_chunk_overlap,
            model_id=model_id,
        )
    ]
    embedder.embed(texts[:32])  # warm up the session

    def raw_model_seconds() -> float:
        started = time.perf_counter()
        embedder.embed(texts, batch_size=settings.embedding_batch_size)
        return time.perf_counter() - started

    # the machine is shared: time the raw model before and after ingestion and compare with the mean
    raw_before = raw_model_seconds()
    drop_collection(settings, args.collection)
    try:
        first = sync_collection(settings, args.collection, documents, source="scifact-bench", embedder=embedder)
        started = time.perf_counter()
        reloaded = load_documents(settings.shared_data_dir / "scifact")[: args.docs]
        rerun = sync_collection(settings, args.collection, reloaded, source="scifact-bench", embedder=embedder)
        rerun_seconds = time.perf_counter() - started
    finally:
        drop_collection(settings, args.collection)
    raw_after = raw_model_seconds()
    full = _reingest_full_collection(settings, args.full_collection, embedder)

    raw_rate = len(texts) / ((raw_before + raw_after) / 2)
    ingest_rate = first.chunks / first.seconds_total
    print(
        json.dumps(
            {
                "benchmark": "rag_ingest",
                "documents": first.documents,
                "chunks": first.chunks,
                "embedding_backend": embedder.backend,
                "embedding_threads": settings.embedding_threads,
                "batch_size": settings.embedding_batch_size,
                "chunk_size": settings.rag_chunk_size,
                "chunk_overlap": settings.rag_chunk_overlap,
                "raw_model_chunks_per_s": round(raw_rate, 1),
                "raw_model_chunks_per_s_before_after": [
                    round(len(texts) / raw_before, 1),
                    round(len(texts) / raw_after, 1),
                ],
                "ingest_chunks_per_s": round(ingest_rate, 1),
                "ingest_vs_raw": round(ingest_rate / raw_rate, 3),
                "ingest_seconds": {
                    k.removeprefix("seconds_"): round(v, 2)
                    for k, v in first.as_dict().items()
                    if k.startswith("seconds_")
                },
                "reingest_unchanged_seconds": round(rerun_seconds, 2),
                "reingest_embedded": rerun.embedded,
                "full_collection_reingest_unchanged": full,
                "load_average_1m": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


def _reingest_full_collection(settings: Settings, collection: str, embedder: Embedder) -> dict[str, object] | None:
    """Re-ingest an existing full collection from disk (load, chunk, hash, compare): nothing to embed."""
    from flightline.platform import database
    from flightline.rag.ingestion import ingest_source

    with database.connect(settings, settings.warehouse_db) as conn:
        row = conn.execute("select source, chunk_count from rag_collections where name = %s", (collection,)).fetchone()
    if row is None:
        return None
    report = ingest_source(settings, Path(row[0]), collection=collection, embedder=embedder)
    return {
        "collection": collection,
        "chunks": report.chunks,
        "seconds": round(report.seconds_total, 2),
        "embedded": report.embedded,
        "changed": report.added + report.updated + report.deleted,
    }


if __name__ == "__main__":
    main()
