"""The flight-delay features, defined once for training and serving.

The prediction moment of a flight is two hours before its scheduled departure
(:func:`prediction_time`). The point-in-time rule: a fact about a flight may feed a feature only if it
was known strictly before that moment. Each fact has its own "known at" time:

- a flight's outcome (arrived 15+ minutes late or cancelled) is known at its ``outcome_known_at``
  (scheduled departure + departure delay + air time + 30 minutes; cancelled: scheduled departure);
- a flight's departure delay is known when it actually departs (scheduled departure + delay);
- a weather observation is known at its ``observed_at``;
- schedules (carrier, route, distance, plane) are known in advance.

Windowed features are computed in :mod:`flightline.features.spark` on a time grid: the row stamped
``feature_at = t`` uses only facts known before ``t``; Feast's point-in-time join then takes the latest
row at or before the prediction moment. Request-time transforms (clock features of the scheduled
departure) are pure functions here, called by the Feast on-demand view in training and by serving.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flightline.platform.errors import FlightlineError

if TYPE_CHECKING:
    import pandas as pd

PREDICTION_LEAD = dt.timedelta(hours=2)
"""How long before scheduled departure a prediction is made (and every feature is frozen)."""

DEPARTURE_RANGE = (dt.datetime(1900, 1, 1, tzinfo=dt.UTC), dt.datetime(2200, 1, 1, tzinfo=dt.UTC))
"""Scheduled departures the features are defined for (UTC, end excluded): well inside the span of pandas'
nanosecond timestamps (1677-2262), which the clock features and Feast's on-demand view compute with."""

LOCAL_TZ = "America/New_York"
"""The airports' clock, for the request-time transforms."""

LABEL = "is_delayed"
"""The target: arrival delay >= 15 minutes or cancelled (column of ``marts.flights``)."""

FEATURE_SERVICE = "flight_delay_v1"
"""The Feast feature service the model reads; bump the suffix when the feature list changes."""

DAILY_WINDOWS_DAYS = (7, 28)
"""Windows of the daily rolling delay rates, in days."""

HOURLY_WINDOWS_HOURS = (3, 24)
"""Windows of the hourly rolling delay rates at the origin, in hours."""

DEPARTURE_WINDOW_HOURS = 2
"""Window of the origin's recent mean departure delay, in hours."""

DAILY_KEYS = {
    "carrier": "carrier_code",
    "origin": "origin_airport_code",
    "dest": "dest_airport_code",
    "route": "route_code",
}
"""Grouping of the daily rolling rates: feature-name prefix -> entity join key."""

WEATHER_FEATURES = (
    "temperature_f",
    "dewpoint_f",
    "humidity_pct",
    "wind_speed_mph",
    "wind_gust_mph",
    "precipitation_in",
    "pressure_mb",
    "visibility_miles",
)
"""Columns of ``marts.weather_observations`` served as features (latest observation at the origin)."""

REQUEST_FEATURES = (
    "departure_hour_local",
    "departure_minute_of_day_local",
    "departure_day_of_week",
    "departure_month",
    "departure_day_of_year",
    "is_weekend",
)
"""Outputs of :func:`request_features`, the on-demand transforms of the scheduled departure."""


def daily_feature_names(prefix: str) -> list[str]:
    """Names of one key's daily rolling features, e.g. ``carrier_delay_rate_7d``, ``carrier_flights_7d``."""
    names = []
    for days in DAILY_WINDOWS_DAYS:
        names += [f"{prefix}_delay_rate_{days}d", f"{prefix}_flights_{days}d"]
    return names


def origin_hourly_feature_names() -> list[str]:
    """Names of the origin's hourly features (recent congestion at the airport)."""
    names = []
    for hours in HOURLY_WINDOWS_HOURS:
        names += [f"origin_delay_rate_{hours}h", f"origin_flights_{hours}h"]
    return names + [f"origin_mean_dep_delay_{DEPARTURE_WINDOW_HOURS}h", f"origin_departures_{DEPARTURE_WINDOW_HOURS}h"]


PLANE_FEATURES = ("plane_year_built", "plane_seats")
PLANE_RECENT_FEATURES = ("plane_last_dep_delay_minutes", "plane_last_arrival_delay_minutes")
ROUTE_FEATURES = ("distance_miles",)

FEATURE_VIEWS: dict[str, list[str]] = {
    **{f"{prefix}_daily": daily_feature_names(prefix) for prefix in DAILY_KEYS},
    "origin_hourly": origin_hourly_feature_names(),
    "origin_weather": list(WEATHER_FEATURES),
    "plane_attributes": list(PLANE_FEATURES),
    "plane_recent": list(PLANE_RECENT_FEATURES),
    "route_attributes": list(ROUTE_FEATURES),
    "departure_clock": list(REQUEST_FEATURES),
}
"""Feast feature view -> its features, in the order the model reads them."""

FEATURE_VIEW_TTLS: dict[str, dt.timedelta] = {
    **{f"{prefix}_daily": dt.timedelta(days=1) for prefix in DAILY_KEYS},
    "origin_hourly": dt.timedelta(hours=1),
    "origin_weather": dt.timedelta(hours=3),
    "plane_attributes": dt.timedelta(0),
    "plane_recent": dt.timedelta(days=1),
    "route_attributes": dt.timedelta(0),
}
"""How long a stored value stays valid after its timestamp (0: forever), offline and online alike:
one grid step for rolling rates, 3 h for hourly weather (gaps happen), a day for a plane's latest
delays, no limit for facts known in advance."""

FEATURE_NAMES: list[str] = [name for names in FEATURE_VIEWS.values() for name in names]
"""The model's input columns, in order."""

ENTITY_COLUMNS = (
    "carrier_code",
    "origin_airport_code",
    "dest_airport_code",
    "route_code",
    "tail_number",
)
"""Join keys of the Feast entities a flight row carries."""


def prediction_time(scheduled_departure_at: dt.datetime) -> dt.datetime:
    """The point-in-time rule's moment: nothing known at or after it may feed the flight's features."""
    if scheduled_departure_at.tzinfo is None:
        raise FlightlineError(
            f"scheduled departure {scheduled_departure_at.isoformat()} has no time zone; pass an aware datetime (UTC)"
        )
    earliest, end = DEPARTURE_RANGE
    if not earliest <= scheduled_departure_at < end:
        raise FlightlineError(
            f"scheduled departure {scheduled_departure_at.isoformat()} is outside the supported range "
            f"{earliest:%Y-%m-%d} to {end:%Y-%m-%d} (UTC)"
        )
    return scheduled_departure_at - PREDICTION_LEAD


def route_code(origin_airport_code: str, dest_airport_code: str) -> str:
    """The route key, e.g. ``JFK-LAX`` (same spelling as ``marts.flights.route_code``)."""
    return f"{origin_airport_code}-{dest_airport_code}"


def request_features(scheduled_departure_at: pd.Series) -> pd.DataFrame:
    """Clock features of the scheduled departure (local New York time), for training and serving.

    Training runs it through the Feast on-demand view on large Series; serving runs it on one row per
    request, where pandas' per-call overhead dominates (a ``.dt`` accessor call costs ~65 us even on one
    row: a version with one accessor per feature took ~1 ms per flight, 0.6 s per million rows). So the
    timestamps are converted to local wall-clock time once (one vectorized tz conversion, which applies
    the DST rules), and every feature is then integer arithmetic on the ``datetime64`` values and their
    day/month/year truncations: cheap for one row and for millions. A missing timestamp (NaT/None) gives
    NaN in the clock columns and 0.0 in ``is_weekend`` (what it has always given, so training rows and
    served rows keep meaning the same).

    Args:
        scheduled_departure_at: UTC timestamps (tz-aware or naive UTC).

    Returns:
        One row per input (same index) with the columns of :data:`REQUEST_FEATURES` (float64, so missing
        stays NaN).
    """
    import numpy as np
    import pandas as pd

    if isinstance(scheduled_departure_at.dtype, pd.DatetimeTZDtype):
        instants = scheduled_departure_at.array  # already instants: to_datetime(utc=True) would only re-wrap them
    else:
        instants = pd.to_datetime(scheduled_departure_at, utc=True).array
    local = instants.tz_convert(LOCAL_TZ).tz_localize(None).to_numpy()  # wall clock, datetime64 (NaT kept)
    missing = np.isnat(local)
    day = local.astype("datetime64[D]")  # numpy casts round toward the past, so pre-1970 days are right too
    minute_of_day = (local.astype("datetime64[m]") - day).view("int64")
    day_of_week = (day.view("int64") + 3) % 7  # days since 1970-01-01, a Thursday; Monday = 0 as in pandas
    clock = {
        "departure_hour_local": minute_of_day // 60,
        "departure_minute_of_day_local": minute_of_day,
        "departure_day_of_week": day_of_week,
        "departure_month": local.astype("datetime64[M]").view("int64") % 12 + 1,  # months since 1970-01
        "departure_day_of_year": (day - local.astype("datetime64[Y]").astype("datetime64[D]")).view("int64") + 1,
        "is_weekend": day_of_week >= 5,
    }
    out = np.empty((len(local), len(REQUEST_FEATURES)), dtype="float64")
    for j, name in enumerate(REQUEST_FEATURES):
        out[:, j] = clock[name]
    out[missing] = np.nan  # a NaT's integer view is garbage
    out[missing, REQUEST_FEATURES.index("is_weekend")] = 0.0  # not NaN: what a missing time has always given
    return pd.DataFrame(out, index=scheduled_departure_at.index, columns=list(REQUEST_FEATURES))


_CLOCK_CACHE_SIZE = 16_384
_clock_cache: dict[dt.datetime, tuple[float, ...]] = {}


def departure_clocks(departures: list[dt.datetime]) -> list[tuple[float, ...]]:
    """:func:`request_features` of each departure (aware), in :data:`REQUEST_FEATURES` order, memoized.

    Serving's form: the same function, called once on the departures not seen yet (one vectorized call
    for a whole batch request). A pandas call costs ~100 us even for one row, as much as the rest of a
    flight's feature work, while departures repeat (a day's flights leave on at most 1,440 distinct
    minutes, and a flight is scored again and again before it leaves); the cache holds up to 16,384
    instants (~5 MB, measured) and starts over when full. Equal instants in other zones share an entry, which is
    right: the features depend on the instant only.
    """
    clocks = {departure: clock for departure in departures if (clock := _clock_cache.get(departure)) is not None}
    missing = [departure for departure in dict.fromkeys(departures) if departure not in clocks]
    if missing:
        import pandas as pd

        for departure in missing:
            prediction_time(departure)  # the same time zone and range errors as everywhere else
        rows = [tuple(row) for row in request_features(pd.Series(missing)).to_numpy(dtype="float64").tolist()]
        clocks.update(zip(missing, rows, strict=True))
        if len(_clock_cache) + len(missing) > _CLOCK_CACHE_SIZE:
            _clock_cache.clear()
        _clock_cache.update(zip(missing, rows, strict=True))
    return [clocks[departure] for departure in departures]


@dataclass(frozen=True)
class FlightRequest:
    """A flight to score, as a caller knows it before departure."""

    carrier_code: str
    flight_number: int
    origin_airport_code: str
    dest_airport_code: str
    scheduled_departure_at: dt.datetime
    tail_number: str | None = None

    def entity_row(self) -> dict[str, object]:
        """The Feast entity keys and request data of this flight."""
        return {
            "carrier_code": self.carrier_code,
            "origin_airport_code": self.origin_airport_code,
            "dest_airport_code": self.dest_airport_code,
            "route_code": route_code(self.origin_airport_code, self.dest_airport_code),
            "tail_number": self.tail_number or "",
            "scheduled_departure_at": self.scheduled_departure_at,
        }
