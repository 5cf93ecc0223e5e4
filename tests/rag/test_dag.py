"""The embedding_ingestion DAG: parses cleanly, is wired as designed, and runs end to end in Airflow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flightline.platform.config import Settings

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "embedding_ingestion.py"


def _dag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["embedding_ingestion"]


def test_dag_shape_schedule_and_params() -> None:
    dag = _dag()
    assert dag.task_ids == ["sync", "evaluate_and_record"]
    assert dag.get_task("evaluate_and_record").upstream_task_ids == {"sync"}
    assert all(task.retries == 2 for task in dag.tasks)
    assert dag.catchup is False and "rag" in dag.tags
    assert {"source", "collection", "chunk_size", "chunk_overlap", "eval_max_queries"} <= set(dag.params)
    # runs daily and when the rag_documents asset is updated; announces rag_chunks when done
    assert "0 3 * * *" in repr(dag.timetable) and "rag_documents" in repr(dag.timetable)
    assert [outlet.name for outlet in dag.get_task("sync").outlets] == ["rag_chunks"]


@pytest.mark.integration
def test_dag_ingests_a_folder_and_records_the_run_in_mlflow(platform: Settings) -> None:
    from mlflow.tracking import MlflowClient

    from flightline.rag.ingestion import drop_collection

    tmp_path = _documents_folder(platform, "dag_test_docs")  # <home>/documents: a root a run may read
    (tmp_path / "handbook.md").write_text("# Handbook\n\nOn-call engineers acknowledge pages within five minutes.")
    (tmp_path / "faq.txt").write_text("Expenses are reimbursed monthly after manager approval.")
    dag = _dag()
    try:
        run = dag.test(run_conf={"source": str(tmp_path), "collection": "dag_test_docs"})
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert set(states.values()) == {"success"}, states

        client = MlflowClient(platform.mlflow_url)
        experiment = client.get_experiment_by_name("rag")
        runs = client.search_runs([experiment.experiment_id], "params.collection = 'dag_test_docs'")
        assert len(runs) == 1
        logged = runs[0].data
        assert logged.params["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert logged.params["chunk_size"] == str(platform.rag_chunk_size)
        assert logged.metrics["documents"] == 2 and logged.metrics["added"] == logged.metrics["chunks"] == 2
    finally:
        drop_collection(platform, "dag_test_docs")


@pytest.mark.integration
def test_a_source_with_a_document_postgres_cannot_store_fails_at_once(platform: Settings) -> None:
    """The run fails on its first try, naming the file, and writes nothing: a retry cannot fix the source."""
    from flightline.rag.ingestion import drop_collection

    tmp_path = _documents_folder(platform, "dag_bad_docs")
    (tmp_path / "handbook.md").write_text("# Handbook\n\nOn-call engineers acknowledge pages within five minutes.")
    (tmp_path / "archive.txt").write_bytes(b"PK\x03\x04\x00\x00 a zip file named .txt")
    run = _dag().test(run_conf={"source": str(tmp_path), "collection": "dag_bad_docs"})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"sync": "failed", "evaluate_and_record": "upstream_failed"}
    assert [ti.try_number for ti in run.get_task_instances() if ti.task_id == "sync"] == [1]
    assert not drop_collection(platform, "dag_bad_docs")  # nothing was written


@pytest.mark.integration
def test_a_source_outside_the_allowed_roots_fails_at_once_and_reads_nothing(platform: Settings, tmp_path: Path) -> None:
    """Whoever may trigger the DAG could otherwise make any text file on the machine searchable over HTTP."""
    from flightline.rag.ingestion import drop_collection

    (tmp_path / "private.md").write_text("# Private\n\nNot for the search index.")
    inside = _documents_folder(platform, "dag_escape_docs")
    (inside / "up").symlink_to(tmp_path)  # a link out of an allowed root is followed, then refused
    dotted = inside.joinpath(*[".."] * (len(inside.parts) - 1), *tmp_path.parts[1:])  # <root>/../../<tmp_path>
    for source in (tmp_path, inside / "up", dotted):
        run = _dag().test(run_conf={"source": str(source), "collection": "dag_escape_docs"})
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        assert states == {"sync": "failed", "evaluate_and_record": "upstream_failed"}, source
    assert not drop_collection(platform, "dag_escape_docs")


def _documents_folder(settings: Settings, name: str) -> Path:
    import shutil

    folder = settings.home / "documents" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
