"""Request and response bodies of the prediction API (validated at the boundary: bad input is a 422)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from flightline.features.definitions import FlightRequest, prediction_time
from flightline.platform.errors import FlightlineError

Variant = Literal["champion", "challenger", "fallback"]
PolicyMode = Literal["champion", "canary", "ab"]


class FlightIn(BaseModel):
    """A flight as a caller knows it before departure."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    carrier: str = Field(min_length=2, max_length=3, pattern=r"^[A-Z0-9]+$", examples=["UA"])
    flight_number: int = Field(ge=1, le=9999, examples=[1545])
    origin: str = Field(min_length=3, max_length=4, pattern=r"^[A-Z]+$", examples=["EWR"])
    destination: str = Field(min_length=3, max_length=4, pattern=r"^[A-Z]+$", examples=["IAH"])
    scheduled_departure: dt.datetime = Field(
        description="with a time zone, e.g. 2013-01-01T10:15:00Z; from 1900 to 2199 (UTC)"
    )
    tail_number: str | None = Field(default=None, max_length=10, pattern=r"^[A-Z0-9]*$", examples=["N14228"])
    routing_key: str | None = Field(
        default=None, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$",  # no control characters: the log keeps it
        description="sticky key for canary/A-B (a user id); default: the flight",
    )

    @field_validator("scheduled_departure")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        try:  # the features' own checks (a time zone, the range): a 422 here, not an overflow in pandas later
            prediction_time(value)
        except FlightlineError as exc:
            raise ValueError(str(exc)) from None
        return value.astimezone(dt.UTC)

    @field_validator("destination")
    @classmethod
    def _not_origin(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("origin"):
            raise ValueError(f"origin and destination are both {value}: a flight goes between two airports")
        return value

    def to_request(self) -> FlightRequest:
        return FlightRequest(
            carrier_code=self.carrier,
            flight_number=self.flight_number,
            origin_airport_code=self.origin,
            dest_airport_code=self.destination,
            scheduled_departure_at=self.scheduled_departure,
            tail_number=self.tail_number,
        )

    def sticky_key(self) -> str:
        """The routing key, or the flight itself (carrier, number, departure date): one flight, one variant."""
        return self.routing_key or f"{self.carrier}{self.flight_number}:{self.scheduled_departure.date().isoformat()}"


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flights: list[FlightIn] = Field(min_length=1, max_length=1000)


class FeatureReport(BaseModel):
    fetched: list[str]
    computed: list[str]
    missing: list[str]
    stale: list[str]
    defaulted: dict[str, float | None] = Field(description="fallback value served for each missing/stale feature")
    store_error: str | None = None


class PredictionOut(BaseModel):
    request_id: str
    delay_probability: float
    model_name: str
    model_version: str | None
    variant: Variant
    fallback_reason: str | None = Field(default=None, description="why the routed variant did not answer")
    features: FeatureReport


class BatchOut(BaseModel):
    predictions: list[PredictionOut]


class PolicyIn(BaseModel):
    """A traffic policy change: who and why are required, so every change has an owner."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # a blank reason is no reason

    mode: PolicyMode = "champion"
    challenger_percent: float = Field(default=0.0, ge=0, le=100, allow_inf_nan=False)
    shadow: bool = False
    experiment: str = Field(default="default", min_length=1, max_length=100, description="salt of the sticky hash")
    set_by: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=2000)
    rollback_failure_percent: float | None = Field(
        default=None, ge=0, le=100, allow_inf_nan=False,
        description="roll back to the champion alone once more than this percent of the requests routed to the "
        "challenger failed (error, timeout, open circuit) in a router replica; none: no guard",
    )
    rollback_min_requests: int = Field(
        default=50, ge=1, le=1_000_000, description="requests routed to the challenger before the guard judges"
    )

    def as_record(self) -> dict[str, Any]:
        return self.model_dump()
