"""Feature definitions: the point-in-time moment, request-time transforms and the model's columns."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from flightline.features import definitions as F
from flightline.platform.errors import FlightlineError


def test_prediction_time_is_two_hours_before_departure_and_needs_a_time_zone() -> None:
    departure = dt.datetime(2013, 3, 10, 14, 0, tzinfo=dt.UTC)
    assert F.prediction_time(departure) == dt.datetime(2013, 3, 10, 12, 0, tzinfo=dt.UTC)
    with pytest.raises(FlightlineError, match="time zone"):
        F.prediction_time(departure.replace(tzinfo=None))


def test_departures_outside_the_supported_range_are_refused_and_its_ends_compute() -> None:
    earliest, end = F.DEPARTURE_RANGE
    last = end - dt.timedelta(seconds=1)
    for outside in (earliest - dt.timedelta(seconds=1), end, dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)):
        with pytest.raises(FlightlineError, match="outside the supported range"):
            F.departure_clocks([outside])
    # the ends are inside pandas' nanosecond span, with the lead and the local time zone applied
    clocks = F.departure_clocks([earliest, last])
    assert clocks[0][F.REQUEST_FEATURES.index("departure_month")] == 12  # still 1899 in New York
    assert clocks[1][F.REQUEST_FEATURES.index("departure_day_of_year")] == 365  # 2199 is no leap year
    assert F.prediction_time(earliest) == earliest - F.PREDICTION_LEAD


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


def _clock(times: list[str]) -> pd.DataFrame:
    return F.request_features(pd.Series(pd.to_datetime(times, utc=True)))


def test_request_features_at_the_daylight_saving_switches() -> None:
    # spring forward: 06:59 UTC is 01:59 EST, 07:00 UTC is 03:00 EDT (02:xx never happens locally)
    spring = _clock(["2013-03-10 06:59", "2013-03-10 07:00", "2013-03-10 07:30"])
    assert spring["departure_hour_local"].tolist() == [1.0, 3.0, 3.0]
    assert spring["departure_minute_of_day_local"].tolist() == [119.0, 180.0, 210.0]
    # fall back: 05:30 UTC is 01:30 EDT and 06:30 UTC is 01:30 EST again; 04:59 UTC is 00:59 EDT
    fall = _clock(["2013-11-03 04:59", "2013-11-03 05:30", "2013-11-03 06:30", "2013-11-03 07:00"])
    assert fall["departure_hour_local"].tolist() == [0.0, 1.0, 1.0, 2.0]
    assert fall["departure_minute_of_day_local"].tolist() == [59.0, 90.0, 90.0, 120.0]
    assert fall["departure_day_of_week"].tolist() == [6.0] * 4 and fall["is_weekend"].tolist() == [1.0] * 4
    # a timestamp just after midnight UTC is still the previous local day (and weekday, and month)
    late = _clock(["2013-04-01 03:59", "2013-04-01 04:00"])  # EDT: UTC-4
    assert late["departure_month"].tolist() == [3.0, 4.0]
    assert late["departure_day_of_week"].tolist() == [6.0, 0.0] and late["is_weekend"].tolist() == [1.0, 0.0]


def test_request_features_day_of_year_on_leap_years_and_year_ends() -> None:
    out = _clock(
        [
            "2012-02-29 17:00",
            "2012-03-01 17:00",
            "2013-03-01 17:00",
            "2012-12-31 18:00",
            "2013-01-01 04:59",
            "2013-01-01 05:00",
            "2013-12-31 18:00",
        ]
    )
    # 2013-01-01 04:59 UTC is still 2012-12-31 23:59 in New York: day 366 of the leap year
    assert out["departure_day_of_year"].tolist() == [60.0, 61.0, 60.0, 366.0, 366.0, 1.0, 365.0]
    assert out["departure_month"].tolist() == [2.0, 3.0, 3.0, 12.0, 12.0, 1.0, 12.0]
    assert out["departure_minute_of_day_local"].tolist() == [720.0, 720.0, 720.0, 780.0, 1439.0, 0.0, 780.0]


def test_request_features_missing_times_give_nan_clock_and_leave_other_rows_alone() -> None:
    times = pd.Series([None, dt.datetime(2013, 3, 9, 13, 30, tzinfo=dt.UTC), pd.NaT], index=[10, 20, 30])
    out = F.request_features(times)
    assert list(out.index) == [10, 20, 30] and (out.dtypes == "float64").all()
    clock = [name for name in F.REQUEST_FEATURES if name != "is_weekend"]
    assert out.loc[[10, 30], clock].isna().all().all()
    # is_weekend of a missing time has always been 0.0 (a NaN weekday is not >= 5): kept so that
    # training and serving rows mean what they meant
    assert out.loc[[10, 30], "is_weekend"].tolist() == [0.0, 0.0]
    assert out.loc[20].tolist() == [8.0, 510.0, 5.0, 3.0, 68.0, 1.0]  # Saturday 2013-03-09 08:30 EST
    assert F.request_features(pd.Series([None])).isna().sum().sum() == len(F.REQUEST_FEATURES) - 1


def test_request_features_match_python_zoneinfo_and_do_not_depend_on_batching() -> None:
    rng = np.random.default_rng(7)
    seconds = rng.integers(pd.Timestamp("1999-01-01").timestamp(), pd.Timestamp("2031-01-01").timestamp(), 3000)
    times = pd.Series(pd.to_datetime(seconds, unit="s", utc=True), index=rng.permutation(len(seconds)) + 100)
    times.iloc[::500] = pd.NaT
    batch = F.request_features(times)
    assert batch.index.equals(times.index) and list(batch.columns) == list(F.REQUEST_FEATURES)
    new_york = ZoneInfo(F.LOCAL_TZ)
    for position in range(0, len(times), 7):
        one = F.request_features(times.iloc[position : position + 1])
        pd.testing.assert_frame_equal(one, batch.iloc[position : position + 1])
        if pd.isna(times.iloc[position]):
            continue
        local = times.iloc[position].to_pydatetime().astimezone(new_york)  # an independent implementation
        expected = [
            local.hour,
            local.hour * 60 + local.minute,
            local.weekday(),
            local.month,
            local.timetuple().tm_yday,
            float(local.weekday() >= 5),
        ]
        assert one.iloc[0].tolist() == expected, local
    # naive UTC, tz-aware in another zone and plain datetimes are the same instants
    pd.testing.assert_frame_equal(F.request_features(times.dt.tz_localize(None)), batch)
    pd.testing.assert_frame_equal(F.request_features(times.dt.tz_convert("Asia/Tokyo")), batch)
    objects = pd.Series([None if pd.isna(t) else t.to_pydatetime() for t in times], index=times.index, dtype=object)
    pd.testing.assert_frame_equal(F.request_features(objects), batch)


def test_departure_clocks_are_request_features_computed_once_per_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    times = pd.Series(pd.to_datetime(["2013-03-10 06:59", "2013-03-10 07:00", "2013-11-03 05:30"], utc=True))
    expected = [tuple(row) for row in F.request_features(times).to_numpy().tolist()]
    a, b, c = (t.to_pydatetime() for t in times)
    calls: list[int] = []
    real = F.request_features
    monkeypatch.setattr(F, "request_features", lambda s: calls.append(len(s)) or real(s))
    monkeypatch.setattr(F, "_clock_cache", {})
    tokyo = a.astimezone(ZoneInfo("Asia/Tokyo"))  # the same instant: the same departure
    assert F.departure_clocks([a, b, tokyo, c, a]) == [expected[0], expected[1], expected[0], expected[2], expected[0]]
    assert calls == [3]  # the distinct instants, in one vectorized call
    assert F.departure_clocks([c, b]) == [expected[2], expected[1]] and calls == [3]  # cached
    with pytest.raises(FlightlineError, match="time zone"):
        F.departure_clocks([dt.datetime(2013, 3, 10, 7, 0)])
    monkeypatch.setattr(F, "_CLOCK_CACHE_SIZE", 4)
    later = [a + dt.timedelta(minutes=m) for m in (10, 20, 30)]
    F.departure_clocks(later)  # 3 cached + 3 new > 4: starts over with the new ones
    assert set(F._clock_cache) == set(later)


def test_online_reader_query_is_rendered_once_with_quoted_identifiers() -> None:
    from flightline.features.online import OnlineFeatureReader, ViewSpec

    specs = [
        ViewSpec("carrier_daily", "proj_carrier_daily", "carrier_code", dt.timedelta(days=1), ("a",)),
        ViewSpec("odd", 'we"ird Name', "tail_number", dt.timedelta(0), ("b",)),
    ]
    reader = OnlineFeatureReader(specs, schema="online")
    assert isinstance(reader.query, str)
    columns = "entity_key, feature_name, value, event_ts"
    assert reader.query == (
        f'select 0::int2, {columns} from "online"."proj_carrier_daily" where entity_key = any(%(carrier_code)s)'
        f' union all select 1::int2, {columns} from "online"."we""ird Name" where entity_key = any(%(tail_number)s)'
    )


def test_feature_names_are_unique_and_follow_the_feature_views() -> None:
    assert len(F.FEATURE_NAMES) == len(set(F.FEATURE_NAMES))
    assert F.FEATURE_VIEWS["departure_clock"] == list(F.REQUEST_FEATURES)
    assert "carrier_delay_rate_7d" in F.FEATURE_NAMES and "route_flights_28d" in F.FEATURE_NAMES
    # nothing known only after departure is a feature
    for leaky in ("dep_delay", "arr_delay", "dep_time", "arr_time", "air_time", "is_delayed", "arrival_delay_minutes"):
        assert leaky not in F.FEATURE_NAMES


def test_flight_request_entity_row_and_served_row_order() -> None:
    from flightline.features.online import ServedFeatures

    request = F.FlightRequest("UA", 1545, "EWR", "IAH", dt.datetime(2013, 1, 1, 10, 15, tzinfo=dt.UTC), "N14228")
    row = request.entity_row()
    assert row["route_code"] == "EWR-IAH" and row["tail_number"] == "N14228"
    # values filled in another order than the model's: the served vector must still follow FEATURE_NAMES
    values = {name: float(i) for i, name in enumerate(reversed(F.FEATURE_NAMES))}
    assert ServedFeatures(values=values).vector() == [values[name] for name in F.FEATURE_NAMES]
