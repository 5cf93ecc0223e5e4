"""Feature definitions: the point-in-time moment, request-time transforms and the model's columns."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from flightline import features as F
from flightline.errors import FlightlineError


def test_prediction_time_is_two_hours_before_departure_and_needs_a_time_zone() -> None:
    departure = dt.datetime(2013, 3, 10, 14, 0, tzinfo=dt.UTC)
    assert F.prediction_time(departure) == dt.datetime(2013, 3, 10, 12, 0, tzinfo=dt.UTC)
    with pytest.raises(FlightlineError, match="time zone"):
        F.prediction_time(departure.replace(tzinfo=None))


def test_request_features_use_new_york_local_time_across_daylight_saving() -> None:
    # 2013-03-10 is the spring-forward day: 13:30 UTC is 08:30 EST the day before, 09:30 EDT after
    times = pd.Series(pd.to_datetime(["2013-03-09 13:30", "2013-03-11 13:30", "2013-12-31 23:59"], utc=True))
    out = F.request_features(times)
    assert list(out.columns) == list(F.REQUEST_FEATURES)
    assert out["departure_hour_local"].tolist() == [8.0, 9.0, 18.0]
    assert out["departure_minute_of_day_local"].tolist() == [510.0, 570.0, 1139.0]
    assert out["departure_day_of_week"].tolist() == [5.0, 0.0, 1.0]  # Saturday, Monday, Tuesday
    assert out["is_weekend"].tolist() == [1.0, 0.0, 0.0]
    assert out["departure_month"].tolist() == [3.0, 3.0, 12.0]


def test_feature_names_are_unique_and_follow_the_feature_views() -> None:
    assert len(F.FEATURE_NAMES) == len(set(F.FEATURE_NAMES))
    assert F.FEATURE_VIEWS["departure_clock"] == list(F.REQUEST_FEATURES)
    assert "carrier_delay_rate_7d" in F.FEATURE_NAMES and "route_flights_28d" in F.FEATURE_NAMES
    # nothing known only after departure is a feature
    for leaky in ("dep_delay", "arr_delay", "dep_time", "arr_time", "air_time", "is_delayed", "arrival_delay_minutes"):
        assert leaky not in F.FEATURE_NAMES


def test_flight_request_entity_row_and_served_row_order() -> None:
    from flightline.online_features import ServedFeatures

    request = F.FlightRequest("UA", 1545, "EWR", "IAH", dt.datetime(2013, 1, 1, 10, 15, tzinfo=dt.UTC), "N14228")
    row = request.entity_row()
    assert row["route_code"] == "EWR-IAH" and row["tail_number"] == "N14228"
    # values filled in another order than the model's: the served vector must still follow FEATURE_NAMES
    values = {name: float(i) for i, name in enumerate(reversed(F.FEATURE_NAMES))}
    assert ServedFeatures(values=values).vector() == [values[name] for name in F.FEATURE_NAMES]
