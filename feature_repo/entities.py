"""Feast entities of the flight-delay model: the keys a flight carries before departure."""

from feast import Entity, ValueType

_OWNER = "ml-platform@flightline.dev"

carrier = Entity(
    name="carrier",
    join_keys=["carrier_code"],
    value_type=ValueType.STRING,
    description="Airline, by its two-letter code (marts.flights.carrier_code).",
    owner=_OWNER,
    tags={"domain": "flights"},
)
origin_airport = Entity(
    name="origin_airport",
    join_keys=["origin_airport_code"],
    value_type=ValueType.STRING,
    description="Departure airport, by FAA code (EWR, JFK, LGA).",
    owner=_OWNER,
    tags={"domain": "flights"},
)
dest_airport = Entity(
    name="dest_airport",
    join_keys=["dest_airport_code"],
    value_type=ValueType.STRING,
    description="Arrival airport, by FAA code.",
    owner=_OWNER,
    tags={"domain": "flights"},
)
route = Entity(
    name="route",
    join_keys=["route_code"],
    value_type=ValueType.STRING,
    description="Origin-destination pair, e.g. JFK-LAX.",
    owner=_OWNER,
    tags={"domain": "flights"},
)
plane = Entity(
    name="plane",
    join_keys=["tail_number"],
    value_type=ValueType.STRING,
    description="Aircraft, by tail number.",
    owner=_OWNER,
    tags={"domain": "flights"},
)
