"""Batch inference in Spark with the registered champion: same probability as online, idempotent reruns."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import httpx
import pytest
from serving_fixtures import DEPARTURE, FLIGHT_ID, flight, seed_flight, set_alias

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration


def seeded_day(platform: Settings) -> dt.date:
    """The seeded flight's local day, with the flight scheduled in marts.flights."""
    from zoneinfo import ZoneInfo

    from flightline.features import definitions as F

    seed_flight(platform)
    return DEPARTURE.astimezone(ZoneInfo(F.LOCAL_TZ)).date()


def test_score_day_matches_online_and_reruns_idempotently(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    from flightline.platform.database import connect
    from flightline.serving.batch_inference import score_day

    day = seeded_day(platform)
    first = score_day(platform, day)
    again = score_day(platform, day)
    assert first["flights"] == again["flights"] >= 1 and first["model_version"] == models["champion"]
    with connect(platform, platform.warehouse_db) as conn:
        rows = conn.execute(
            "select flight_id, delay_probability, model_version from serving.batch_predictions "
            "where prediction_date = %s", (day,)
        ).fetchall()
        freshness = conn.execute(
            "select model_version, flights, scored_at from serving.batch_prediction_freshness "
            "where prediction_date = %s", (day,)
        ).fetchone()
    assert len(rows) == again["flights"]  # the rerun replaced the day, it did not append
    assert freshness[0] == models["champion"] and freshness[1] == len(rows)
    assert freshness[2] > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    batch = {r[0]: r[1] for r in rows}[FLIGHT_ID]
    online = httpx.post(f"{serve_url}/v1/predict/flight-delay", json=flight(), timeout=30).json()
    assert online["model_version"] == models["champion"]
    assert batch == pytest.approx(online["delay_probability"], abs=1e-9)


def test_a_champion_that_cannot_serve_fails_the_day_and_leaves_its_rows(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    from flightline.platform.database import connect
    from flightline.platform.errors import FlightlineError
    from flightline.serving.batch_inference import score_day

    day = seeded_day(platform)
    scored = score_day(platform, day)

    def day_rows() -> list[tuple[object, ...]]:
        with connect(platform, platform.warehouse_db) as conn:
            return conn.execute("select flight_id, delay_probability, model_version, scored_at "
                                "from serving.batch_predictions where prediction_date = %s order by flight_id",
                                (day,)).fetchall()

    before = day_rows()
    set_alias(platform, "champion", models["other_inputs"])  # moved in MLflow's UI: no registry check
    try:
        wrong = rf"^version {models['other_inputs']} of '{platform.model_name}' cannot serve flights: it takes inputs"
        with pytest.raises(FlightlineError, match=wrong):
            score_day(platform, day)
    finally:
        set_alias(platform, "champion", models["champion"])
    assert len(before) == scored["flights"] and day_rows() == before


def test_dag_run_scores_the_day_after_its_logical_date(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    """A real run of the DAG (``dag.test()``, no ``day`` param) scores the flights of the next local day
    with the champion: the day's rows and its freshness record are the ones this run wrote."""
    from airflow.dag_processing.dagbag import DagBag

    from flightline.features import definitions as F
    from flightline.platform.config import PROJECT_DIR
    from flightline.platform.database import connect
    from flightline.serving import batch_inference

    day = seeded_day(platform)
    start, end = batch_inference.day_bounds(day)
    with connect(platform, platform.warehouse_db, autocommit=True) as conn:  # earlier runs must not count
        conn.execute(batch_inference.DDL)
        conn.execute("delete from serving.batch_predictions where prediction_date = %s", (day,))
        conn.execute("delete from serving.batch_prediction_freshness where prediction_date = %s", (day,))
        scheduled = {r[0] for r in conn.execute(
            "select flight_id from marts.flights where scheduled_departure_at >= %s and scheduled_departure_at < %s",
            (start, end),
        ).fetchall()}
    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags" / "batch_inference.py"))
    assert bag.import_errors == {}
    logical = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(4), tzinfo=dt.UTC)
    began = dt.datetime.now(dt.UTC)
    run = bag.dags["batch_inference"].test(logical_date=logical)
    assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {"score": "success"}
    with connect(platform, platform.warehouse_db) as conn:
        rows = conn.execute(
            "select flight_id, scheduled_departure_at, delay_probability, model_name, model_version, scored_at "
            "from serving.batch_predictions where prediction_date = %s", (day,)
        ).fetchall()
        freshness = conn.execute(
            "select model_name, model_version, flights, features_as_of, scored_at "
            "from serving.batch_prediction_freshness where prediction_date = %s", (day,)
        ).fetchone()
    assert FLIGHT_ID in scheduled and {r[0] for r in rows} == scheduled
    seeded = next(r for r in rows if r[0] == FLIGHT_ID)
    assert seeded[1] == DEPARTURE and 0 < seeded[2] < 1
    assert {(r[3], r[4]) for r in rows} == {(platform.model_name, models["champion"])}
    assert freshness[:3] == (platform.model_name, models["champion"], len(rows))
    assert freshness[3] == end - F.PREDICTION_LEAD
    assert {r[5] for r in rows} == {freshness[4]} and began <= freshness[4] <= dt.datetime.now(dt.UTC)


def test_batch_dag_shape() -> None:
    import importlib.util

    from flightline.platform.config import PROJECT_DIR

    spec = importlib.util.spec_from_file_location("batch_inference_dag", PROJECT_DIR / "dags" / "batch_inference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.batch_inference_dag
    assert dag.dag_id == "batch_inference" and [t.task_id for t in dag.tasks] == ["score"]
    assert dag.catchup is False and dag.default_args["retries"] == 2


def test_day_param_is_a_calendar_date_and_empty_means_the_day_after_the_logical_date() -> None:
    from flightline.platform.errors import FlightlineConfigError
    from flightline.serving.batch_inference import day_to_score

    assert day_to_score("", dt.date(2013, 12, 31)) == dt.date(2014, 1, 1)
    assert day_to_score("2013-02-28", dt.date(2026, 1, 1)) == dt.date(2013, 2, 28)
    # the form's pattern lets it through; the task fails at once with the reason (no retries)
    with pytest.raises(FlightlineConfigError, match=r"day '2013-02-30' is not a date \(YYYY-MM-DD\)"):
        day_to_score("2013-02-30", dt.date(2026, 1, 1))
