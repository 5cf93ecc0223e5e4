"""Offline sources: the warehouse tables Spark writes (schema features) and dbt's weather mart.

Each table carries its entity key, an event timestamp (feature_at: built only from facts known
strictly before it) and a created timestamp.
"""

from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

_OWNER = "ml-platform@flightline.dev"


def _feature_table(name: str, description: str) -> PostgreSQLSource:
    return PostgreSQLSource(
        name=f"features_{name}",
        query=f"select * from features.{name}",
        timestamp_field="feature_at",
        created_timestamp_column="created_at",
        description=description,
        owner=_OWNER,
        tags={"writer": "flightline.features.spark"},
    )


carrier_daily_source = _feature_table("carrier_daily", "Daily rolling delay rates per carrier.")
origin_daily_source = _feature_table("origin_daily", "Daily rolling delay rates per origin airport.")
dest_daily_source = _feature_table("dest_daily", "Daily rolling delay rates per destination airport.")
route_daily_source = _feature_table("route_daily", "Daily rolling delay rates per route.")
origin_hourly_source = _feature_table("origin_hourly", "Hourly congestion at the origin airport.")
plane_recent_source = _feature_table("plane_recent", "A plane's latest known departure and arrival delays.")
plane_attributes_source = _feature_table("plane_attributes", "Plane registry facts (known in advance).")
route_attributes_source = _feature_table("route_attributes", "Route facts from the schedule (known in advance).")

weather_source = PostgreSQLSource(
    name="marts_weather_observations",
    query="select * from marts.weather_observations",
    timestamp_field="observed_at",
    created_timestamp_column="created_at",
    description="Hourly weather at the three New York airports (dbt mart).",
    owner=_OWNER,
    tags={"writer": "dbt"},
)
