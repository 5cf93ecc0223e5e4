"""Request-time transforms: the clock of the scheduled departure, computed by flightline.features.

Serving calls the same function (flightline.features.definitions.request_features), so the transform is one
tested piece of code in both paths.
"""

import pandas as pd
from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, UnixTimestamp

from flightline.features.definitions import REQUEST_FEATURES

departure_request = RequestSource(
    name="departure_request",
    schema=[Field(name="scheduled_departure_at", dtype=UnixTimestamp)],
    description="The flight's scheduled departure (UTC), sent with the request.",
    owner="ml-platform@flightline.dev",
)


@on_demand_feature_view(
    sources=[departure_request],
    schema=[Field(name=name, dtype=Float64) for name in REQUEST_FEATURES],
    mode="pandas",
    description="Local hour, minute of day, weekday, month, day of year and weekend flag of the scheduled departure.",
    owner="ml-platform@flightline.dev",
    tags={"model": "flight_delay"},
)
def departure_clock(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast re-runs this body from its source text: import inside, not from the module's globals
    from flightline.features.definitions import request_features

    return request_features(inputs["scheduled_departure_at"])
