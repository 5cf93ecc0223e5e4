"""Feature views of the flight-delay model. Names and order come from flightline.features.

Each ttl (flightline.features.definitions.FEATURE_VIEW_TTLS, shared with serving) is the longest a value stays
valid after its timestamp.
"""

from data_sources import (
    carrier_daily_source,
    dest_daily_source,
    origin_daily_source,
    origin_hourly_source,
    plane_attributes_source,
    plane_recent_source,
    route_attributes_source,
    route_daily_source,
    weather_source,
)
from entities import carrier, dest_airport, origin_airport, plane, route
from feast import Entity, FeatureView, Field
from feast.data_source import DataSource
from feast.types import Float64

from flightline.features.definitions import FEATURE_VIEW_TTLS, FEATURE_VIEWS

_OWNER = "ml-platform@flightline.dev"


def _view(name: str, entity: Entity, source: DataSource, description: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=FEATURE_VIEW_TTLS[name],
        schema=[Field(name=feature, dtype=Float64) for feature in FEATURE_VIEWS[name]],
        source=source,
        online=True,
        description=description,
        owner=_OWNER,
        tags={"model": "flight_delay"},
    )


carrier_daily = _view(
    "carrier_daily",
    carrier,
    carrier_daily_source,
    "Share of the carrier's flights delayed 15+ min or cancelled, over the last 7 and 28 days of known outcomes.",
)
origin_daily = _view(
    "origin_daily",
    origin_airport,
    origin_daily_source,
    "Delay rate of flights from the origin over the last 7 and 28 days of known outcomes.",
)
dest_daily = _view(
    "dest_daily",
    dest_airport,
    dest_daily_source,
    "Delay rate of flights to the destination over the last 7 and 28 days of known outcomes.",
)
route_daily = _view(
    "route_daily",
    route,
    route_daily_source,
    "Delay rate on the route over the last 7 and 28 days of known outcomes.",
)
origin_hourly = _view(
    "origin_hourly",
    origin_airport,
    origin_hourly_source,
    "Congestion at the origin: delay rate of outcomes known in the last 3 and 24 hours, "
    "mean departure delay of the last 2 hours.",
)
origin_weather = _view(
    "origin_weather",
    origin_airport,
    weather_source,
    "Latest hourly weather observation at the origin.",
)
plane_attributes = _view(
    "plane_attributes",
    plane,
    plane_attributes_source,
    "Year built and seats of the plane (FAA registry).",
)
plane_recent = _view(
    "plane_recent",
    plane,
    plane_recent_source,
    "The plane's latest known departure and arrival delays (delay propagation through its rotation).",
)
route_attributes = _view(
    "route_attributes",
    route,
    route_attributes_source,
    "Scheduled distance of the route.",
)
