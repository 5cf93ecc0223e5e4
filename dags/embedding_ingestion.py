"""Embedding ingestion: sync a document collection into pgvector and record the run in MLflow.

load -> chunk -> content-hash -> embed only new or changed chunks -> upsert (HNSW + BM25 postings),
delete chunks whose documents vanished -> evaluate retrieval when the collection changed and has
relevance labels (BEIR qrels) -> record collection, model, chunk settings, counts and metrics.

Runs daily and whenever the `rag_documents` asset is updated (a DAG that writes documents lists it
as an outlet, or an operator posts an asset event). An unchanged collection re-syncs in seconds
and embeds nothing. Params: `source` (a folder of .txt/.md files or a BEIR corpus; empty means the
SciFact corpus in the shared data), `collection`, chunk settings, `eval_max_queries`. A `source` must lie
under the shared data folder, `<home>/documents` or a folder in `FLIGHTLINE_RAG_SOURCE_ROOTS`: whoever
may trigger this DAG could otherwise make any text file on the machine searchable over HTTP.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

RAG_DOCUMENTS = Asset(name="rag_documents", uri="flightline://rag/documents")
RAG_CHUNKS = Asset(name="rag_chunks", uri="flightline://rag/chunks")


@dag(
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=RAG_DOCUMENTS),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["rag", "embeddings"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=1)},
    params={
        "source": Param(
            "", type="string", description="folder or BEIR corpus under an allowed root; empty: shared SciFact"
        ),
        "collection": Param("scifact", type="string", pattern=r"^[a-z][a-z0-9_-]{0,62}$"),
        "chunk_size": Param(None, type=["null", "integer"], minimum=16, description="words; null: setting"),
        "chunk_overlap": Param(None, type=["null", "integer"], minimum=0, description="words; null: setting"),
        "eval_max_queries": Param(None, type=["null", "integer"], minimum=1, description="null: all labelled"),
    },
)
def embedding_ingestion() -> None:
    @task(outlets=[RAG_CHUNKS])
    def sync(params: dict[str, object] | None = None) -> dict[str, object]:
        from pathlib import Path

        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowFailException

        from flightline.platform.config import get_settings
        from flightline.platform.dag_conf import check_run_conf
        from flightline.platform.errors import DataValidationError, FlightlineConfigError, NotFoundError
        from flightline.rag import documents, ingestion

        settings = get_settings()
        assert params is not None
        source = Path(str(params["source"])) if params["source"] else settings.shared_data_dir / "scifact"
        try:
            check_run_conf(get_current_context())
            source = documents.check_source_allowed(settings, source)
            report = ingestion.ingest_source(
                settings,
                source,
                collection=str(params["collection"]),
                chunk_size=params["chunk_size"],
                chunk_overlap=params["chunk_overlap"],  # type: ignore[arg-type]
            )
        except (NotFoundError, FlightlineConfigError, DataValidationError) as exc:  # retries cannot fix the source
            raise AirflowFailException(str(exc)) from exc
        return report.as_dict()

    @task
    def evaluate_and_record(report: dict[str, object], params: dict[str, object] | None = None) -> dict[str, object]:
        from pathlib import Path

        from flightline.platform.config import get_settings
        from flightline.rag import evaluation as rag_eval

        settings = get_settings()
        assert params is not None
        dataset = Path(str(report["source"]))
        changed = any(report[key] for key in ("added", "updated", "deleted"))
        labelled = (dataset / "qrels" / "train.tsv").is_file()
        evaluation = None
        if changed and labelled:
            evaluation = rag_eval.evaluate(
                settings,
                collection=str(report["collection"]),
                dataset_dir=dataset,
                max_queries=params["eval_max_queries"],  # type: ignore[arg-type]
            )
        run_id = rag_eval.record_ingestion_run(settings, report, evaluation)
        return {
            "mlflow_run_id": run_id,
            "evaluated": evaluation is not None,
            "metrics": rag_eval.metrics_for_mlflow(evaluation) if evaluation else {},
        }

    evaluate_and_record(sync())


dag_object = embedding_ingestion()

if __name__ == "__main__":
    dag_object.test()
