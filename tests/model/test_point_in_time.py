"""The point-in-time rule in the Spark features: changing anything known at or after a feature's
timestamp (outcomes, departures) leaves the feature row unchanged; earlier facts do change it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from flightline.features import spark as spark_features
from flightline.platform.config import get_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

T = dt.datetime(2013, 3, 10, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = spark_features.spark_session(get_settings())
    yield session
    session.stop()


def _flights(hours_before: list[float], *, delayed: list[bool], dep_delay: float = 0.0) -> pd.DataFrame:
    """Raw flights (bronze columns) of carrier UA from EWR, scheduled ``h`` hours before T."""
    rows = []
    for i, (h, late) in enumerate(zip(hours_before, delayed, strict=True)):
        rows.append(
            {
                "carrier": "UA",
                "flight": i,
                "tailnum": "N1",
                "origin": "EWR",
                "dest": "ORD",
                "distance": 719,
                "dep_time": 800,
                "arr_time": 1000,
                "dep_delay": dep_delay,
                "arr_delay": 60.0 if late else 0.0,
                "air_time": 60.0,
                "scheduled_departure_at": T - dt.timedelta(hours=h),
            }
        )
    return pd.DataFrame(rows)


def _features_at_t(spark: SparkSession, flights: pd.DataFrame) -> pd.Series:
    facts = spark_features.flight_facts(spark.createDataFrame(flights))
    start = T - dt.timedelta(days=30)
    daily = spark_features._rolling_rates(
        spark,
        facts,
        "carrier_code",
        "carrier",
        start=start,
        end=T + dt.timedelta(days=2),
        step_s=86400,
        windows={"7d": 7, "28d": 28},
    ).toPandas()
    daily["feature_at"] = pd.to_datetime(daily["feature_at"], utc=True)
    return daily.set_index("feature_at").loc[pd.Timestamp(T)]


def test_future_outcomes_do_not_change_a_feature_row(spark: SparkSession) -> None:
    # known 3 days before T (in the window) and ones known at/after T (outcome = sched + 0 + 60 + 30 min)
    past = [72.0, 80.0]
    future = [1.5, 0.5, -5.0]  # known T, T + 1 h, T + 6.5 h
    base = _features_at_t(spark, _flights(past + future, delayed=[True, False, False, False, False]))
    flipped = _features_at_t(spark, _flights(past + future, delayed=[True, False, True, True, True]))
    pd.testing.assert_series_equal(base, flipped)
    assert base["carrier_delay_rate_7d"] == 0.5 and base["carrier_flights_7d"] == 2.0


def test_past_outcomes_do_change_it(spark: SparkSession) -> None:
    base = _features_at_t(spark, _flights([72.0, 80.0], delayed=[True, False]))
    changed = _features_at_t(spark, _flights([72.0, 80.0], delayed=[True, True]))
    assert base["carrier_delay_rate_7d"] == 0.5 and changed["carrier_delay_rate_7d"] == 1.0
