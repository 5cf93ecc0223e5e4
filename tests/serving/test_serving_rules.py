"""Routing rules without a platform: sticky buckets, breaker states, request validation, feature fallbacks."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from flightline.features import definitions as F
from flightline.features.online import OnlineFeatureReader, ViewSpec
from flightline.serving.breaker import CircuitBreaker
from flightline.serving.guard import ChallengerTally, rollback_reason
from flightline.serving.policy import CHALLENGER, TrafficPolicy, assign_variant, bucket
from flightline.serving.schemas import FlightIn, PolicyIn


def test_bucket_is_stable_and_uniform() -> None:
    assert bucket("UA1545:2013-01-01", "default") == bucket("UA1545:2013-01-01", "default")
    share = sum(bucket(f"k{i}", "exp") < 2500 for i in range(20_000)) / 20_000
    assert abs(share - 0.25) < 0.015


def test_canary_share_sticky_and_salted() -> None:
    canary = TrafficPolicy(mode="canary", challenger_percent=10, experiment="a")
    routed = [assign_variant(canary, f"user{i}") for i in range(10_000)]
    assert abs(routed.count(CHALLENGER) / 10_000 - 0.10) < 0.012
    assert routed == [assign_variant(canary, f"user{i}") for i in range(10_000)]
    reshuffled = [assign_variant(TrafficPolicy(mode="canary", challenger_percent=10, experiment="b"), f"user{i}")
                  for i in range(10_000)]
    assert reshuffled != routed
    wider = TrafficPolicy(mode="canary", challenger_percent=20, experiment="a")
    # raising the share only moves champion users over: nobody already on the challenger goes back
    assert all(assign_variant(wider, f"user{i}") == CHALLENGER for i, v in enumerate(routed) if v == CHALLENGER)
    assert assign_variant(TrafficPolicy(mode="champion", challenger_percent=50), "user1") == "champion"


def test_breaker_opens_then_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker("challenger", failures=2, reset_after_s=5, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 5.0
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.failure()  # the trial failed: open again for another 5 s
    assert breaker.state == "open"
    now[0] = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_an_abandoned_trial_frees_the_half_open_slot() -> None:
    now = [0.0]
    breaker = CircuitBreaker("champion", failures=1, reset_after_s=5, clock=lambda: now[0])
    breaker.failure()
    now[0] = 5.0
    assert breaker.allow() and not breaker.allow()
    breaker.abandoned()  # the trial's caller gave up: no verdict either way
    assert breaker.state == "half-open" and breaker.consecutive_failures == 1
    assert breaker.allow()  # the next call is the trial


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"carrier": "u"}, "carrier"),
        ({"flight_number": 0}, "flight_number"),
        ({"scheduled_departure": "2013-01-01T10:00:00"}, "scheduled_departure"),
        ({"scheduled_departure": "tomorrow"}, "scheduled_departure"),
        ({"origin": "E1"}, "origin"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_flight_validation_names_the_field(change: dict[str, object], field: str) -> None:
    body = {"carrier": "UA", "flight_number": 1545, "origin": "EWR", "destination": "IAH",
            "scheduled_departure": "2013-01-01T10:15:00Z", **change}
    with pytest.raises(ValidationError) as info:
        FlightIn.model_validate(body)
    assert field in str(info.value)


def test_policy_needs_owner_and_reason() -> None:
    with pytest.raises(ValidationError):
        PolicyIn(mode="canary", challenger_percent=10, set_by="", reason="x")
    with pytest.raises(ValidationError):
        PolicyIn(mode="canary", challenger_percent=120, set_by="me", reason="x")
    with pytest.raises(ValidationError, match="reason"):
        PolicyIn(mode="canary", challenger_percent=10, set_by="me", reason="   ")
    for percent in ("challenger_percent", "rollback_failure_percent"):  # NaN passes ge/le comparisons
        with pytest.raises(ValidationError, match="finite number"):
            PolicyIn(mode="canary", set_by="me", reason="x", **{percent: float("nan")})


def _serialized(reader: OnlineFeatureReader, request: F.FlightRequest) -> list[list[bytes]]:
    return reader.params([request])[0]


def test_rollback_guard_judges_the_current_policys_challenger_after_enough_requests() -> None:
    guarded = TrafficPolicy(mode="canary", challenger_percent=10, id=7, rollback_failure_percent=5,
                            rollback_min_requests=40)
    tally = ChallengerTally()
    tally.count(7, routed=39, failed=39)
    assert rollback_reason(guarded, tally) is None  # too few requests to judge
    tally.count(7, routed=1, failed=0)
    reason = rollback_reason(guarded, tally)
    assert reason is not None and "39 of the 40" in reason and "97.5 % > 5 %" in reason
    assert rollback_reason(TrafficPolicy(mode="canary", challenger_percent=10, id=7), tally) is None  # no guard
    tally.count(8, routed=100, failed=5)  # a new policy: counted from zero
    assert (tally.routed, tally.failed) == (100, 5)
    assert rollback_reason(guarded, tally) is None  # the tally is another policy's
    at_limit = TrafficPolicy(mode="ab", challenger_percent=50, id=8, rollback_failure_percent=5,
                             rollback_min_requests=40)
    assert rollback_reason(at_limit, tally) is None  # 5 % is not more than 5 %
    tally.count(8, routed=1, failed=1)  # 6 of 101
    assert rollback_reason(at_limit, tally) is not None


def test_missing_and_stale_features_fall_back_explicitly() -> None:
    from feast.protos.feast.types.Value_pb2 import Value

    specs = [
        ViewSpec("carrier_daily", "t1", "carrier_code", dt.timedelta(days=1), tuple(F.FEATURE_VIEWS["carrier_daily"])),
        ViewSpec("origin_hourly", "t2", "origin_airport_code", dt.timedelta(hours=1),
                 tuple(F.FEATURE_VIEWS["origin_hourly"])),
        ViewSpec("plane_attributes", "t3", "tail_number", dt.timedelta(0), tuple(F.FEATURE_VIEWS["plane_attributes"])),
    ]
    reader = OnlineFeatureReader(specs)
    departure = dt.datetime(2013, 3, 1, 15, 0, tzinfo=dt.UTC)
    request = F.FlightRequest("UA", 1, "EWR", "IAH", departure, "N1")
    keys = _serialized(reader, request)
    moment = departure - F.PREDICTION_LEAD
    blob = Value(double_val=0.25).SerializeToString()
    rows = [
        (0, keys[0][0], "carrier_delay_rate_7d", blob, moment - dt.timedelta(hours=3)),  # fresh
        (1, keys[1][0], "origin_delay_rate_3h", blob, moment - dt.timedelta(hours=5)),  # older than 1 h: stale
        (2, keys[2][0], "plane_seats", blob, moment - dt.timedelta(days=900)),  # ttl 0: never stale
    ]
    row = reader.assemble([request], keys, rows)[0]
    assert row.values["carrier_delay_rate_7d"] == 0.25 and "carrier_delay_rate_7d" in row.fetched
    assert "origin_delay_rate_3h" in row.stale and "origin_delay_rate_3h" in row.defaulted
    assert "plane_seats" in row.fetched
    assert "carrier_flights_7d" in row.missing and row.defaulted["carrier_flights_7d"] is None
    assert set(row.computed) == set(F.REQUEST_FEATURES)
    assert row.as_json()["values"]["carrier_flights_7d"] is None  # NaN is reported as null, never as 0
    down = reader.unavailable([request], "OperationalError: connection refused")[0]
    assert down.store_error and not down.fetched and len(down.defaulted) == sum(len(s.features) for s in specs)


def test_alias_follower_stops_when_asked() -> None:
    """A model deployment moved to another alias ends the old alias's poller (no thread left reloading it)."""
    from flightline.platform.config import get_settings
    from flightline.serving.model_loader import AliasedModel

    model = AliasedModel(get_settings(), "challenger")
    follower = model.follow(poll_s=3600)
    assert follower.is_alive()
    model.stop_following()
    follower.join(timeout=5)
    assert not follower.is_alive()


def test_experiment_verdict_needs_the_whole_interval_on_one_side() -> None:
    from flightline.serving.experiments import MIN_OUTCOMES, Estimate, verdict

    better = Estimate(mean=-0.02, variance=0.005**2)
    assert better.interval() == pytest.approx([-0.0298, -0.0102], abs=1e-4)
    assert verdict(better, enough=True) == "challenger better"
    assert verdict(Estimate(0.02, 0.005**2), enough=True) == "champion better"
    assert verdict(Estimate(-0.02, 0.011**2), enough=True) == "no significant difference"
    assert verdict(better, enough=False) == f"too few known outcomes (need {MIN_OUTCOMES} per arm)"
    one_key = Estimate.clustered(mean=0.1, raw_variance=0.0, keys=1)  # one cluster: no interval at all
    assert one_key.interval() == [-float("inf"), float("inf")]
    assert verdict(one_key.minus(better), enough=True) == "no significant difference"
    assert Estimate.clustered(0.1, 0.001, keys=5).variance == pytest.approx(0.001 * 5 / 4)
