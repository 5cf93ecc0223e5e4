"""Feature services: one per model version of the feature list (flightline.features.definitions.FEATURE_SERVICE)."""

from feast import FeatureService
from feature_views import (
    carrier_daily,
    dest_daily,
    origin_daily,
    origin_hourly,
    origin_weather,
    plane_attributes,
    plane_recent,
    route_attributes,
    route_daily,
)
from on_demand_feature_views import departure_clock

from flightline.features.definitions import FEATURE_SERVICE

flight_delay_v1 = FeatureService(
    name=FEATURE_SERVICE,
    features=[
        carrier_daily,
        origin_daily,
        dest_daily,
        route_daily,
        origin_hourly,
        origin_weather,
        plane_attributes,
        plane_recent,
        route_attributes,
        departure_clock,
    ],
    description="Inputs of the flight-delay model: arrival 15+ min late or cancelled, as known 2 h before departure.",
    owner="ml-platform@flightline.dev",
    tags={"model": "flight_delay"},
)
