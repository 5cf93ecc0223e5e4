"""Query latency per retrieval mode (query embedding included) and HNSW recall against exact search.

Needs a running platform and an ingested collection (default: the full SciFact corpus,
`flightline rag ingest`). Queries are SciFact training claims. Latency is measured in process
(warm model, one connection: what a RetrievalService replica does) and, with --url, over HTTP
through Ray Serve. Prints JSON.

    python benchmarks/bench_rag_query.py --queries 200 [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence


def _percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50_ms": round(pick(0.50), 2),
        "p95_ms": round(pick(0.95), 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--url", default=None, help="also time POST <url>/v1/rag/search")
    args = parser.parse_args()

    from flightline.platform import database
    from flightline.platform.config import get_settings
    from flightline.rag.embeddings import get_embedder
    from flightline.rag.evaluation import load_queries
    from flightline.rag.retrieval import collection_info, dense_hits, search
    from flightline.rag.schemas import SearchRequest

    settings = get_settings()
    embedder = get_embedder(settings)
    claims = list(load_queries(settings.shared_data_dir / "scifact" / "queries.jsonl").values())[: args.queries]
    result: dict[str, object] = {
        "benchmark": "rag_query",
        "collection": args.collection,
        "queries": len(claims),
        "k": args.k,
        "embedding_backend": embedder.backend,
    }
    with database.connect(settings, settings.warehouse_db) as conn:
        info = collection_info(conn, args.collection)
        result["chunks"] = info.chunk_count
        latency: dict[str, object] = {}
        for mode in ("dense", "lexical", "hybrid"):
            for claim in claims[:10]:  # warm caches
                search(
                    SearchRequest(query=claim, k=args.k, mode=mode, collection=args.collection),
                    settings=settings,
                    embedder=embedder,
                    conn=conn,
                )
            samples = []
            for claim in claims:
                started = time.perf_counter()
                search(
                    SearchRequest(query=claim, k=args.k, mode=mode, collection=args.collection),
                    settings=settings,
                    embedder=embedder,
                    conn=conn,
                )
                samples.append((time.perf_counter() - started) * 1000)
            latency[mode] = _percentiles(samples)
        embed_samples = []
        for claim in claims:
            started = time.perf_counter()
            embedder.embed([claim])
            embed_samples.append((time.perf_counter() - started) * 1000)
        latency["query_embedding_only"] = _percentiles(embed_samples)
        result["in_process_latency"] = latency

        vectors = embedder.embed(claims)
        recall: dict[str, object] = {}
        for depth in (10, 100):
            exact = [
                {h.chunk_id for h in dense_hits(conn, info.name, v, limit=depth, ef_search=depth, exact=True)}
                for v in vectors
            ]
            for ef in sorted({max(ef, depth) for ef in (10, 40, settings.rag_hnsw_ef_search, 200)}):
                approx = [
                    {h.chunk_id for h in dense_hits(conn, info.name, v, limit=depth, ef_search=ef)} for v in vectors
                ]
                overlap = [len(a & e) / len(e) for a, e in zip(approx, exact, strict=True) if e]
                recall[f"recall@{depth}_ef_search_{ef}"] = round(statistics.fmean(overlap), 4)
        result["hnsw_recall_vs_exact"] = recall
        result["hnsw"] = {
            "m": settings.rag_hnsw_m,
            "ef_construction": settings.rag_hnsw_ef_construction,
            "ef_search": settings.rag_hnsw_ef_search,
        }

    if args.url:
        import httpx

        http: dict[str, object] = {}
        with httpx.Client(base_url=args.url, timeout=30) as client:
            for mode in ("dense", "lexical", "hybrid"):
                samples = []
                for claim in claims:
                    started = time.perf_counter()
                    response = client.post(
                        "/v1/rag/search",
                        json={"query": claim, "k": args.k, "mode": mode, "collection": args.collection},
                    )
                    response.raise_for_status()
                    samples.append((time.perf_counter() - started) * 1000)
                http[mode] = _percentiles(samples)
        result["http_latency"] = http
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
