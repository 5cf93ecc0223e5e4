"""Batch inference in Spark with the registered champion: same probability as online, idempotent reruns."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import httpx
import pytest
from serving_fixtures import DEPARTURE, FLIGHT_ID, flight, seed_flight

if TYPE_CHECKING:
    from flightline.config import Settings

pytestmark = pytest.mark.integration


def test_score_day_matches_online_and_reruns_idempotently(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    from zoneinfo import ZoneInfo

    from flightline import features as F
    from flightline.batch_inference import score_day
    from flightline.database import connect

    seed_flight(platform)
    day = DEPARTURE.astimezone(ZoneInfo(F.LOCAL_TZ)).date()
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


def test_batch_dag_shape() -> None:
    import importlib.util

    from flightline.config import PROJECT_DIR

    spec = importlib.util.spec_from_file_location("batch_inference_dag", PROJECT_DIR / "dags" / "batch_inference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.batch_inference_dag
    assert dag.dag_id == "batch_inference" and [t.task_id for t in dag.tasks] == ["score"]
    assert dag.catchup is False and dag.default_args["retries"] == 2
