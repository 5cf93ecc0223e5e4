"""`flightline rag ...`: ingest a collection, search it, and measure retrieval quality on SciFact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

rag_app = typer.Typer(help="Embeddings, pgvector ingestion and hybrid retrieval.", no_args_is_help=True)


@rag_app.command()
def ingest(
    source: Annotated[
        Path | None, typer.Option(help="folder of .txt/.md files or a BEIR corpus; default: SciFact")
    ] = None,
    collection: Annotated[str, typer.Option(help="collection name")] = "scifact",
    chunk_size: Annotated[int | None, typer.Option(help="words per chunk; default: setting")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="overlapping words; default: setting")] = None,
    record: Annotated[bool, typer.Option(help="record the run in MLflow")] = True,
) -> None:
    """Sync a collection into pgvector, embedding only new or changed chunks."""
    from flightline.platform.config import get_settings
    from flightline.rag import evaluation as rag_eval
    from flightline.rag import ingestion

    settings = get_settings()
    report = ingestion.ingest_source(
        settings,
        source or settings.shared_data_dir / "scifact",
        collection=collection,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
    )
    typer.echo(json.dumps(report.as_dict(), indent=2))
    if record:
        typer.echo(f"mlflow run {rag_eval.record_ingestion_run(settings, report.as_dict())}")


@rag_app.command()
def search(
    query: str,
    k: Annotated[int, typer.Option(help="results (chunks)")] = 5,
    mode: Annotated[str, typer.Option(help="dense | lexical | hybrid")] = "hybrid",
    collection: Annotated[str, typer.Option()] = "scifact",
) -> None:
    """Print the best chunks for a query."""
    from flightline.rag import retrieval
    from flightline.rag.schemas import SearchRequest

    response = retrieval.search(SearchRequest(query=query, k=k, mode=mode, collection=collection))  # type: ignore[arg-type]
    for rank, result in enumerate(response.results, start=1):
        typer.echo(f"{rank:>2}. {result.score:.4f} {result.chunk_id}  {result.title or ''}\n    {result.text[:160]}")


@rag_app.command("eval")
def evaluate(
    collection: Annotated[str, typer.Option()] = "scifact",
    dataset: Annotated[
        Path | None, typer.Option(help="BEIR folder with queries.jsonl and qrels/; default: SciFact")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split")] = "train",
    max_queries: Annotated[int | None, typer.Option(min=1, help="evaluate the first N labelled queries only")] = None,
    record: Annotated[bool, typer.Option(help="log the metrics to MLflow")] = True,
) -> None:
    """nDCG@10, recall@10 and recall@100 per retrieval mode on labelled queries."""
    from flightline.platform.config import get_settings
    from flightline.rag import evaluation as rag_eval

    settings = get_settings()
    report = rag_eval.evaluate(
        settings, collection=collection, dataset_dir=dataset, split=split, max_queries=max_queries
    )
    typer.echo(report.table())
    if record:
        run_id = rag_eval.log_to_mlflow(
            settings,
            run_name=f"eval-{collection}",
            params={
                "collection": collection,
                "split": split,
                "max_queries": max_queries,
                "rrf_k": settings.rag_rrf_k,
                "candidates": settings.rag_candidates,
                "bm25_k1": settings.rag_bm25_k1,
                "bm25_b": settings.rag_bm25_b,
                "hnsw_ef_search": settings.rag_hnsw_ef_search,
                "embedding_backend": settings.embedding_backend,
            },
            metrics=rag_eval.metrics_for_mlflow(report),
            tags={"flightline.kind": "rag-eval"},
        )
        typer.echo(f"mlflow run {run_id}")
