"""The prediction log's writer against the real PostgreSQL: a cut connection loses no rows and writes none twice,
and a row that PostgreSQL refuses costs only itself, not the other requests' rows written in the same flush."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration


def _row(**overrides: Any) -> dict[str, Any]:
    return {"request_id": uuid.uuid4().hex, "model_name": "flight_delay", "variant": "champion",
            "model_version": "1", "is_shadow": False, "request": {"carrier": "Z9"}, "features": {"x": 1.0},
            "prediction": 0.5, "latency_ms": 1.0, **overrides}


def _logged(settings: Settings, rows: list[dict[str, Any]]) -> list[str]:
    from flightline.platform.database import connect

    with connect(settings, settings.warehouse_db) as conn:
        return [r[0] for r in conn.execute("select request_id from serving.prediction_log where request_id = any(%s) "
                                           "order by request_id", ([row["request_id"] for row in rows],))]


def _wait_until(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_rows_queued_while_the_connection_is_cut_are_written_once_it_is_back(platform: Settings) -> None:
    from flightline.platform.database import connect
    from flightline.serving.prediction_log import PredictionLogger
    from flightline.serving.tables import ensure_tables

    ensure_tables(platform)
    logger = PredictionLogger(platform, flush_s=0.05)
    try:
        before = [_row() for _ in range(5)]
        for row in before:
            logger.log(row)
        _wait_until(lambda: logger.written == len(before))
        # what a server restart or a failover does to the writer's idle connection
        with connect(platform, platform.warehouse_db, autocommit=True) as conn:
            cut = conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
                               (f"flightline prediction log {os.getpid()}",)).fetchall()
        assert cut == [(True,)]
        after = [_row() for _ in range(30)]
        for row in after:
            logger.log(row)
        _wait_until(lambda: logger.written + logger.dropped == len(before) + len(after))
        assert logger.dropped == 0  # the batch whose COPY met the cut connection was kept and written again
        assert _logged(platform, before + after) == sorted(row["request_id"] for row in before + after)
    finally:
        assert logger.close()


def test_a_row_postgres_refuses_is_dropped_alone(platform: Settings) -> None:
    from flightline.serving.prediction_log import PredictionLogger
    from flightline.serving.tables import ensure_tables

    ensure_tables(platform)
    logger = PredictionLogger(platform, flush_s=0.5)  # long enough for the three to share one COPY
    good = [_row(), _row()]
    bad = _row(sticky_key="user\x001")  # text cannot hold a NUL (the API refuses it; a caller of log() may not)
    try:
        for row in (good[0], bad, good[1]):
            logger.log(row)
        _wait_until(lambda: logger.written + logger.dropped == 3)
        assert (logger.written, logger.dropped) == (2, 1)
        assert _logged(platform, [*good, bad]) == sorted(row["request_id"] for row in good)
    finally:
        assert logger.close()


def test_a_retried_write_that_committed_before_its_connection_broke_is_not_written_again(platform: Settings) -> None:
    """The writer retries a write whose connection broke; when the break came after the server committed it,
    the retry must write nothing. That moment cannot be produced on demand, so the test hands the writer the
    same write twice, as its retry loop would (same write id, same rows, same progress)."""
    from flightline.platform.database import connect
    from flightline.serving.prediction_log import PredictionLogger, _LogBatch
    from flightline.serving.tables import ensure_tables

    ensure_tables(platform)
    logger = PredictionLogger(platform)
    try:
        with connect(platform, platform.warehouse_db, autocommit=True) as conn:
            together = [_row() for _ in range(3)]
            first = _LogBatch(list(together))
            logger._write(conn, first)
            logger._write(conn, _LogBatch(list(together), id=first.id))
            assert _logged(platform, together) == sorted(row["request_id"] for row in together)
            assert logger.written == 3

            # a batch refused as a whole goes row by row, each row its own write: the same holds for each
            good, bad = [_row(), _row()], _row(sticky_key="user\x001")
            one_by_one = _LogBatch([good[0], bad, good[1]])
            logger._write(conn, one_by_one)
            assert (logger.written, logger.dropped) == (5, 1)
            logger._write(conn, _LogBatch([good[1]], id=one_by_one.id, one_by_one=True, done=2))
            assert (logger.written, logger.dropped) == (5, 1)
            assert _logged(platform, [*good, bad]) == sorted(row["request_id"] for row in good)
    finally:
        assert logger.close()


def test_the_ddl_runs_once_so_an_open_read_of_the_log_holds_up_neither_starts_nor_writes(
    platform: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DDL's ALTER TABLEs lock the log exclusively: run on every replica start and policy command, they
    waited for any open read of the log (an analyst's session), and the log's writes queued behind them."""
    from flightline.platform.database import connect
    from flightline.serving.policy import current_policy
    from flightline.serving.prediction_log import PredictionLogger
    from flightline.serving.tables import ensure_tables

    with connect(platform, platform.warehouse_db, autocommit=True) as conn:
        conn.execute("delete from serving.schema_applied")  # as on a platform from before this DDL
    ensure_tables(platform)  # the upgrade: the DDL runs and records its hash
    with connect(platform, platform.warehouse_db) as conn:
        assert conn.execute("select count(*) from serving.schema_applied").fetchone() == (1,)

    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=3s")  # a wait for a table lock fails, not hangs
    logger = PredictionLogger(platform, flush_s=0.05)
    rows = [_row() for _ in range(5)]
    try:
        with connect(platform, platform.warehouse_db) as analyst:
            analyst.execute("select count(*) from serving.prediction_log").fetchone()  # its transaction stays open
            ensure_tables(platform)  # a replica's start; each `serve traffic` command also reads:
            assert current_policy(platform).mode in {"champion", "canary", "ab"}
            for row in rows:
                logger.log(row)
            _wait_until(lambda: logger.written == len(rows))
    finally:
        logger.close()
    assert _logged(platform, rows) == sorted(row["request_id"] for row in rows)


def test_maintenance_dag_prunes_the_rows_older_than_its_retention_and_reruns_idempotently(
    platform: Settings,
) -> None:
    """A real run of ``serving_maintenance`` (``dag.test()``) with keep_days=30: rows logged 100 and 31 days
    ago go, the one from 29 days ago and today's stay; the rerun finds nothing more to delete."""
    import datetime as dt

    from airflow.dag_processing.dagbag import DagBag

    from flightline.platform.config import PROJECT_DIR
    from flightline.platform.database import connect
    from flightline.platform.errors import FlightlineConfigError
    from flightline.serving.prediction_log import prune_prediction_log
    from flightline.serving.tables import ensure_tables

    ensure_tables(platform)
    now = dt.datetime.now(dt.UTC)
    ages = {100: uuid.uuid4().hex, 31: uuid.uuid4().hex, 29: uuid.uuid4().hex, 0: uuid.uuid4().hex}
    with connect(platform, platform.warehouse_db, autocommit=True) as conn:
        for days, request_id in ages.items():
            conn.execute(
                "insert into serving.prediction_log (request_id, logged_at, model_name, variant, is_shadow, "
                "request, features, latency_ms) values (%s, %s, 'flight_delay', 'champion', false, '{}', '{}', 1)",
                (request_id, now - dt.timedelta(days=days)),
            )
    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags" / "serving_maintenance.py"))
    assert bag.import_errors == {}
    dag = bag.dags["serving_maintenance"]
    # retention holds without anyone unpausing it: the platform's scheduler has it unpaused from the start
    from flightline.platform.airflow_client import AirflowClient

    client = AirflowClient(platform)
    client.wait_for_dag("serving_maintenance")
    assert client.set_paused("serving_maintenance", False) is False  # returns whether it was paused
    misspelt = dag.test(run_conf={"keep_dayz": 30})  # Airflow takes it; the default (90 days) would be used
    assert {ti.task_id: str(ti.state) for ti in misspelt.get_task_instances()} == {"prune_prediction_log": "failed"}
    assert len(_logged(platform, [{"request_id": r} for r in ages.values()])) == 4
    for _ in range(2):
        run = dag.test(run_conf={"keep_days": 30})
        assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {"prune_prediction_log": "success"}
        kept = _logged(platform, [{"request_id": r} for r in ages.values()])
        assert sorted(kept) == sorted([ages[29], ages[0]])
    with pytest.raises(FlightlineConfigError, match="at least 1"):
        prune_prediction_log(platform, keep_days=0)
    # batch by batch (one row each), down to the 29-day-old row
    assert prune_prediction_log(platform, keep_days=1, batch_rows=1)["deleted"] >= 1
    assert _logged(platform, [{"request_id": r} for r in ages.values()]) == [ages[0]]
