"""Retrieval quality on BEIR-format relevance labels: nDCG@10, recall@10 and recall@100 per mode.

Chunk rankings become document rankings by keeping each document's best chunk (first occurrence),
as BEIR scores documents. nDCG uses graded gains and log2 discounts, recall divides by the number of
relevant documents, both per query then averaged (pytrec_eval's definitions). When the collection
holds only part of the corpus (tests), labels are restricted to stored documents and claims left
with none are skipped, so the figures describe the stored subset.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flightline.platform.errors import DataValidationError, NotFoundError

if TYPE_CHECKING:
    from flightline.platform.config import Settings
    from flightline.rag.embeddings import Embedder
    from flightline.rag.schemas import SearchMode

MODES: tuple[SearchMode, ...] = ("dense", "lexical", "hybrid")
_CHUNK_DEPTH = 200  # chunks fetched per query: enough distinct documents for recall@100


@dataclass
class ModeMetrics:
    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    seconds: float


@dataclass
class EvalReport:
    collection: str
    split: str
    queries: int
    modes: dict[str, ModeMetrics] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self) -> str:
        """A plain-text table, one row per mode."""
        lines = [f"{'mode':<8} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'seconds':>8}"]
        for mode, metrics in self.modes.items():
            lines.append(
                f"{mode:<8} {metrics.ndcg_at_10:>8.4f} {metrics.recall_at_10:>7.4f} "
                f"{metrics.recall_at_100:>7.4f} {metrics.seconds:>8.1f}"
            )
        lines.append(f"{self.queries} queries, collection {self.collection!r}, split {self.split!r}")
        return "\n".join(lines)


# ---- metrics (pure) ----------------------------------------------------------------------------------


def dedupe_documents(doc_ids: Sequence[str]) -> list[str]:
    """Document ranking from a chunk ranking: each document at its best chunk's position."""
    return list(dict.fromkeys(doc_ids))


def ndcg_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Normalised discounted cumulative gain of the first k documents (0 when nothing is relevant)."""
    dcg = sum(relevance.get(doc_id, 0) / math.log2(rank + 2) for rank, doc_id in enumerate(ranking[:k]))
    ideal = sorted((gain for gain in relevance.values() if gain > 0), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    relevant = {doc_id for doc_id, gain in relevance.items() if gain > 0}
    return len(relevant.intersection(ranking[:k])) / len(relevant) if relevant else 0.0


# ---- data --------------------------------------------------------------------------------------------


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (header; query-id, corpus-id, score) as {query: {doc: gain}}."""
    if not path.is_file():
        raise NotFoundError(f"relevance labels {path} not found; expected BEIR qrels/<split>.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise DataValidationError(f"{path} does not start with the BEIR header query-id, corpus-id, score")
        for row in reader:
            if row:
                qrels.setdefault(row[0].strip(), {})[row[1].strip()] = int(row[2])
    return qrels


def load_queries(path: Path) -> dict[str, str]:
    """BEIR queries.jsonl as {query id: text}."""
    if not path.is_file():
        raise NotFoundError(f"queries {path} not found; expected BEIR queries.jsonl")
    with path.open(encoding="utf-8") as handle:
        return {str(record["_id"]): record["text"] for record in map(json.loads, filter(str.strip, handle))}


# ---- evaluation against the store ---------------------------------------------------------------------


def evaluate(
    settings: Settings,
    *,
    collection: str = "scifact",
    dataset_dir: Path | None = None,
    split: str = "train",
    modes: Sequence[SearchMode] = MODES,
    max_queries: int | None = None,
    embedder: Embedder | None = None,
) -> EvalReport:
    """Score each retrieval mode on the labelled queries of a BEIR dataset against a stored collection.

    Raises:
        NotFoundError: when the collection, queries or labels are missing.
        DataValidationError: when no labelled query has a relevant document in the collection.
    """
    from flightline.platform import database
    from flightline.rag import retrieval
    from flightline.rag.embeddings import get_embedder

    dataset_dir = dataset_dir or settings.shared_data_dir / "scifact"
    qrels = load_qrels(dataset_dir / "qrels" / f"{split}.tsv")
    queries = load_queries(dataset_dir / "queries.jsonl")
    embedder = embedder or get_embedder(settings)
    with database.connect(settings, settings.warehouse_db) as conn:
        info = retrieval.collection_info(conn, collection)
        stored = {
            row[0]
            for row in conn.execute("select distinct doc_id from rag_chunks where collection = %s", (collection,))
        }
        labelled = {
            qid: {doc: gain for doc, gain in docs.items() if doc in stored}
            for qid, docs in qrels.items()
            if qid in queries
        }
        query_ids = sorted(qid for qid, docs in labelled.items() if any(gain > 0 for gain in docs.values()))[
            :max_queries
        ]
        if not query_ids:
            raise DataValidationError(
                f"no {split} query has a relevant document in collection {collection!r}; ingest {dataset_dir} first"
            )
        vectors = embedder.embed([queries[qid] for qid in query_ids])
        report = EvalReport(collection=collection, split=split, queries=len(query_ids))
        doc_of: dict[str, str] = dict(
            conn.execute("select chunk_id, doc_id from rag_chunks where collection = %s", (collection,)).fetchall()
        )
        for mode in modes:
            started = time.perf_counter()
            scores: list[tuple[float, float, float]] = []
            for qid, vector in zip(query_ids, vectors, strict=True):
                hits = retrieval.retrieve(
                    conn, info, settings, query=queries[qid], query_vector=vector, mode=mode, limit=_CHUNK_DEPTH
                )
                ranking = dedupe_documents([doc_of[hit.chunk_id] for hit in hits])
                relevance = labelled[qid]
                scores.append(
                    (
                        ndcg_at_k(ranking, relevance, 10),
                        recall_at_k(ranking, relevance, 10),
                        recall_at_k(ranking, relevance, 100),
                    )
                )
            report.modes[mode] = ModeMetrics(
                ndcg_at_10=sum(s[0] for s in scores) / len(scores),
                recall_at_10=sum(s[1] for s in scores) / len(scores),
                recall_at_100=sum(s[2] for s in scores) / len(scores),
                seconds=time.perf_counter() - started,
            )
    return report


def metrics_for_mlflow(report: EvalReport) -> dict[str, float]:
    """Flat metric names such as ``hybrid_ndcg_at_10``."""
    metrics: dict[str, float] = {"eval_queries": float(report.queries)}
    for mode, values in report.modes.items():
        metrics[f"{mode}_ndcg_at_10"] = values.ndcg_at_10
        metrics[f"{mode}_recall_at_10"] = values.recall_at_10
        metrics[f"{mode}_recall_at_100"] = values.recall_at_100
    return metrics


def log_to_mlflow(
    settings: Settings,
    *,
    run_name: str,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    experiment: str = "rag",
    tags: Mapping[str, str] | None = None,
) -> str:
    """Record one run (ingestion and/or evaluation) on the MLflow server; returns its run id."""
    import mlflow

    from flightline.models import registry

    registry.client(settings)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {})) as run:
        mlflow.log_params({key: str(value) for key, value in params.items()})
        mlflow.log_metrics(dict(metrics))
        return str(run.info.run_id)


def record_ingestion_run(settings: Settings, ingest: Mapping[str, object], evaluation: EvalReport | None = None) -> str:
    """Log one ingestion run: collection, model and version, chunk settings as params; counts,
    timings and (when evaluated) retrieval metrics as metrics. Returns the MLflow run id."""
    params = {
        key: ingest[key]
        for key in (
            "collection",
            "source",
            "embedding_model",
            "embedding_version",
            "embedding_backend",
            "chunk_size",
            "chunk_overlap",
        )
    }
    metrics = {
        key: float(value) for key, value in ingest.items() if isinstance(value, int | float) and key not in params
    }
    if evaluation is not None:
        params["eval_split"] = evaluation.split
        metrics.update(metrics_for_mlflow(evaluation))
    return log_to_mlflow(
        settings,
        run_name=f"ingest-{ingest['collection']}",
        params=params,
        metrics=metrics,
        tags={"flightline.kind": "rag-ingestion"},
    )
