"""A traffic policy's rollback guard over real HTTP: the router rolls a failing challenger back by itself,
recorded with who and why, and leaves a healthy one alone."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import httpx
from serving_fixtures import flight, set_alias, set_policy, wait_for_versions

from flightline.platform.database import connect
from flightline.serving.guard import GUARD_ACTOR, roll_back_async
from flightline.serving.policy import TrafficPolicy, current_policy, experiment_policies, policy_history
from flightline.serving.policy import set_policy as record_policy

if TYPE_CHECKING:
    from flightline.platform.config import Settings

PREDICT = "/v1/predict/flight-delay"


def _challenger_breaker(url: str) -> str:
    return httpx.get(f"{url}/v1/serving/status", timeout=10).json()["breakers"]["challenger"]["state"]


def _predict(url: str, flight_number: int) -> dict[str, object]:
    response = httpx.post(f"{url}{PREDICT}", json=flight(flight_number=flight_number), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_guard_rolls_a_failing_challenger_back_and_records_why(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    experiment = f"guard-{uuid.uuid4().hex[:8]}"
    set_alias(platform, "challenger", models["broken"])
    wait_for_versions(serve_url, {"challenger": models["broken"]}, timeout=60)
    try:
        set_policy(platform, mode="canary", challenger_percent=50, experiment=experiment,
                   rollback_failure_percent=20, rollback_min_requests=10)
        guarded = current_policy(platform)
        assert (guarded.rollback_failure_percent, guarded.rollback_min_requests) == (20, 10)
        answers = [_predict(serve_url, 7200 + n) for n in range(60)]
        deadline = time.monotonic() + 10
        while current_policy(platform).id == guarded.id and time.monotonic() < deadline:
            time.sleep(0.2)
        breaker_of_broken = _challenger_breaker(serve_url)
    finally:
        set_alias(platform, "challenger", models["challenger"])
        wait_for_versions(serve_url, {"challenger": models["challenger"]}, timeout=60)
    # the new version starts with a closed breaker (the rolled-back policy sends it no trial call)
    deadline = time.monotonic() + 3
    while (breaker := _challenger_breaker(serve_url)) != "closed" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (breaker_of_broken, breaker) in {("open", "closed"), ("half-open", "closed")}
    # no caller saw the failures: the champion answered every request the challenger was routed
    assert {a["variant"] for a in answers} == {"champion"}
    assert any("challenger" in str(a["fallback_reason"]) for a in answers)
    with connect(platform, platform.warehouse_db) as conn:
        policies = experiment_policies(conn, experiment)
    assert [p.id for p in policies][0] == guarded.id and len(policies) == 2, policies  # one rollback row
    rolled_back = policies[1]
    assert (rolled_back.mode, rolled_back.challenger_percent, rolled_back.shadow) == ("champion", 0, False)
    assert rolled_back.set_by == GUARD_ACTOR
    assert f"rollback guard of policy {guarded.id}: the challenger failed" in rolled_back.reason
    time.sleep(platform.serve_policy_poll_s * 2 + 0.5)
    # the healthy challenger is back, but the rolled-back policy sends it nothing
    assert {_predict(serve_url, 7300 + n)["variant"] for n in range(20)} == {"champion"}


def test_guard_leaves_a_healthy_challenger_serving(serve_url: str, platform: Settings) -> None:
    set_policy(platform, mode="ab", challenger_percent=50, experiment=f"guard-ok-{uuid.uuid4().hex[:8]}",
               rollback_failure_percent=20, rollback_min_requests=10)
    guarded = current_policy(platform)
    variants = [_predict(serve_url, 7400 + n)["variant"] for n in range(60)]
    time.sleep(platform.serve_policy_poll_s * 2 + 0.5)
    tally = httpx.get(f"{serve_url}/v1/serving/status", timeout=10).json()["challenger_tally"]
    set_policy(platform, mode="champion")
    assert policy_history(platform, limit=2)[1].id == guarded.id  # nothing came between
    assert variants.count("challenger") >= 10
    assert tally == {"policy_id": guarded.id, "routed": variants.count("challenger"), "failed": 0}


def test_a_rollback_is_written_once_and_never_over_a_newer_policy(platform: Settings) -> None:
    """Replicas that trip together race to roll back; an operator may change the policy meanwhile."""
    import asyncio

    import psycopg

    from flightline.serving.schemas import PolicyIn

    def policy(**fields: object) -> TrafficPolicy:
        return record_policy(platform, PolicyIn(set_by="tests", reason="rollback race", **fields))

    async def race(guarded: TrafficPolicy, replicas: int) -> list[bool]:
        dsn = platform.postgres_dsn(platform.warehouse_db)
        conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(replicas)]
        try:
            return list(await asyncio.gather(*(roll_back_async(c, guarded, "race") for c in conns)))
        finally:
            for conn in conns:
                await conn.close()

    guarded = policy(mode="canary", challenger_percent=10, rollback_failure_percent=5)
    assert sorted(asyncio.run(race(guarded, 3))) == [False, False, True]
    assert policy_history(platform, limit=2)[1].id == guarded.id  # one rollback row, right after it
    guarded = policy(mode="canary", challenger_percent=10, rollback_failure_percent=5)
    newer = policy(mode="ab", challenger_percent=50)  # the operator's change lands first
    assert asyncio.run(race(guarded, 1)) == [False]
    assert current_policy(platform).id == newer.id
    policy(mode="champion")
