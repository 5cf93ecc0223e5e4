"""Batch inference: score one day of scheduled flights with the registered champion, in Spark.

Features are the training path's own: Feast's point-in-time join of the feature service at each flight's
prediction time (:func:`flightline.features.store.historical_features`), so batch, online and training
read one definition. Spark applies the model with ``mlflow.pyfunc.spark_udf`` (the version the alias
names when the run starts, pinned for the whole day). Results replace that day's rows in
``serving.batch_predictions`` in one transaction, and ``serving.batch_prediction_freshness`` records
what was scored, with which version, and when: reruns are idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from flightline.features import definitions as F
from flightline.platform.errors import FlightlineConfigError

if TYPE_CHECKING:
    import pandas as pd

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

DDL = """
create schema if not exists serving;
create table if not exists serving.batch_predictions (
    prediction_date date not null,
    flight_id text not null,
    carrier_code text not null,
    origin_airport_code text not null,
    dest_airport_code text not null,
    tail_number text,
    scheduled_departure_at timestamptz not null,
    delay_probability double precision not null,
    model_name text not null,
    model_version text not null,
    scored_at timestamptz not null,
    primary key (prediction_date, flight_id)
);
create table if not exists serving.batch_prediction_freshness (
    prediction_date date primary key,
    model_name text not null,
    model_version text not null,
    flights integer not null,
    features_as_of timestamptz,
    scored_at timestamptz not null
);
"""


def day_to_score(param: str, logical_date: dt.date) -> dt.date:
    """The run's ``day`` param (YYYY-MM-DD), or the day after its logical date when the param is empty.

    Raises:
        FlightlineConfigError: the param is not a calendar date (the form's pattern lets 2013-02-30 pass).
    """
    if not param:
        return logical_date + dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(param)
    except ValueError as exc:
        raise FlightlineConfigError(f"day {param!r} is not a date (YYYY-MM-DD): {exc}") from None


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of one local (New York) day."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(F.LOCAL_TZ)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    return start.astimezone(dt.UTC), (start + dt.timedelta(days=1)).astimezone(dt.UTC)


def score_day(settings: Settings, day: dt.date, *, alias: str = "champion") -> dict[str, Any]:
    """Score every flight scheduled on ``day`` (local) and replace that day's predictions.

    Returns:
        The day, the model version, the number of flights scored and when.
    """
    import mlflow

    from flightline.features import store as feature_store
    from flightline.features.spark import spark_session
    from flightline.models import registry
    from flightline.models.servable import not_probabilities
    from flightline.platform.database import connect
    from flightline.platform.errors import FlightlineError, NotFoundError

    version = registry.alias_version(settings, alias)
    if version is None:
        raise NotFoundError(f"model {settings.model_name!r} has no {alias!r} alias; train and promote a model first")
    start, end = day_bounds(day)
    frame = feature_store.historical_features(settings, feature_store.entity_query(start, end))
    scored_at = dt.datetime.now(dt.UTC)
    rows: list[tuple[Any, ...]] = []
    if len(frame):
        registry.require_servable(settings, str(version.version))  # a clear reason, not a Spark task's traceback
        spark = spark_session(settings)
        columns = ["flight_id", "carrier_code", "origin_airport_code", "dest_airport_code", "tail_number",
                   "scheduled_departure_at"]
        sdf = spark.createDataFrame(frame[columns + F.FEATURE_NAMES])
        udf = mlflow.pyfunc.spark_udf(
            spark, f"models:/{settings.model_name}/{version.version}", result_type="double", env_manager="local"
        )
        # pyspark's annotation of toPandas() does not resolve for mypy (it reads as an unknown type): name it
        scored: pd.DataFrame = sdf.select(*columns, udf(*F.FEATURE_NAMES).alias("delay_probability")).toPandas()
        if wrong := not_probabilities(scored["delay_probability"].tolist(), len(frame)):
            raise FlightlineError(f"{alias} v{version.version} {wrong}; the day's predictions are left as they were")
        rows = [
            (day, str(r.flight_id), r.carrier_code, r.origin_airport_code, r.dest_airport_code,
             r.tail_number or None, r.scheduled_departure_at, float(r.delay_probability), settings.model_name,
             str(version.version), scored_at)
            for r in scored.itertuples(index=False)
        ]
    with connect(settings, settings.warehouse_db) as conn, conn.transaction():
        conn.execute(DDL)
        conn.execute("delete from serving.batch_predictions where prediction_date = %s", (day,))
        with conn.cursor() as cur:
            cur.executemany(
                "insert into serving.batch_predictions values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows
            )
        conn.execute(
            "insert into serving.batch_prediction_freshness values (%s, %s, %s, %s, %s, %s) "
            "on conflict (prediction_date) do update set model_name = excluded.model_name, "
            "model_version = excluded.model_version, flights = excluded.flights, "
            "features_as_of = excluded.features_as_of, scored_at = excluded.scored_at",
            (day, settings.model_name, str(version.version), len(rows),
             end - F.PREDICTION_LEAD if rows else None, scored_at),
        )
    log.info("scored %d flights of %s with %s v%s", len(rows), day, settings.model_name, version.version)
    return {"day": day.isoformat(), "model_version": str(version.version), "flights": len(rows),
            "scored_at": scored_at.isoformat()}
