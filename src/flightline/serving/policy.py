"""Traffic policy and sticky assignment: who answers a request, champion or challenger.

:class:`TrafficPolicy` lives in Postgres (``serving.traffic_policy``, one row per change with who, when and
why); the router re-reads the latest row every ``serve_policy_poll_s``, so a change needs no redeploy.
:func:`assign_variant` buckets a sticky key with SHA-256 (stable across processes and restarts): one flight
(or user) always sees the same variant for a given experiment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flightline.serving.tables import ensure_tables

if TYPE_CHECKING:
    from flightline.platform.config import Settings
    from flightline.serving.schemas import PolicyIn

CHAMPION, CHALLENGER, FALLBACK = "champion", "challenger", "fallback"
BUCKETS = 10_000


@dataclass(frozen=True)
class TrafficPolicy:
    """Who answers: the champion alone, a sticky canary or A/B share to the challenger, plus shadow."""

    mode: str = "champion"
    challenger_percent: float = 0.0
    shadow: bool = False
    experiment: str = "default"
    set_by: str = "default"
    reason: str = "no policy set"
    set_at: str | None = None
    id: int | None = None
    rollback_failure_percent: float | None = None
    rollback_min_requests: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


DEFAULT_POLICY = TrafficPolicy()


def bucket(key: str, experiment: str) -> int:
    """The key's bucket in [0, BUCKETS): SHA-256, so every process and restart agrees."""
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_variant(policy: TrafficPolicy, key: str) -> str:
    """The variant a sticky key is routed to under the policy."""
    if policy.mode == "champion" or policy.challenger_percent <= 0:
        return CHAMPION
    return CHALLENGER if bucket(key, policy.experiment) < policy.challenger_percent * BUCKETS / 100 else CHAMPION


POLICY_LOCK = "select pg_advisory_xact_lock(hashtext('flightline.serving.policy'))"
"""Taken by every policy insert, so a guard's check of the latest policy and its rollback are one step."""


def set_policy(settings: Settings, change: PolicyIn) -> TrafficPolicy:
    """Record a policy change (the router picks it up within ``serve_policy_poll_s``)."""
    from flightline.platform.database import connect
    from flightline.platform.errors import FlightlineConfigError

    if change.mode == "champion" and change.challenger_percent:
        raise FlightlineConfigError(
            "mode 'champion' sends no traffic to the challenger; use canary or ab with a percent"
        )
    if change.mode != "champion" and not change.challenger_percent:
        raise FlightlineConfigError(
            f"mode {change.mode!r} with 0 % sends no traffic to the challenger; give a percent above 0, "
            "or use champion"
        )
    if change.rollback_failure_percent is not None and not change.challenger_percent:
        raise FlightlineConfigError(
            "a rollback guard watches the requests routed to the challenger, and this policy routes none"
        )
    ensure_tables(settings)
    record = change.as_record()
    if record["rollback_failure_percent"] is None:
        record["rollback_min_requests"] = None
    with connect(settings, settings.warehouse_db, autocommit=True) as conn, conn.transaction():
        conn.execute(POLICY_LOCK)  # a guard's rollback then never lands after, and over, this change
        conn.execute(
            "insert into serving.traffic_policy (mode, challenger_percent, shadow, experiment, set_by, reason, "
            "rollback_failure_percent, rollback_min_requests) values (%(mode)s, %(challenger_percent)s, %(shadow)s, "
            "%(experiment)s, %(set_by)s, %(reason)s, %(rollback_failure_percent)s, %(rollback_min_requests)s)",
            record,
        )
        latest = conn.execute(_POLICY_SQL, (1,)).fetchone()  # this change: the lock orders the inserts
    assert latest is not None  # the row inserted above
    return _policy(latest)


_POLICY_SELECT = (
    "select id, mode, challenger_percent, shadow, experiment, set_by, reason, set_at, rollback_failure_percent, "
    "rollback_min_requests from serving.traffic_policy"
)
_POLICY_SQL = f"{_POLICY_SELECT} order by id desc limit %s"


def _policy(row: tuple[Any, ...]) -> TrafficPolicy:
    return TrafficPolicy(
        id=row[0], mode=row[1], challenger_percent=row[2], shadow=row[3], experiment=row[4],
        set_by=row[5], reason=row[6], set_at=row[7].isoformat(), rollback_failure_percent=row[8],
        rollback_min_requests=row[9],
    )


def current_policy(settings: Settings) -> TrafficPolicy:
    return (policy_history(settings, limit=1) or [DEFAULT_POLICY])[0]


def policy_history(settings: Settings, *, limit: int = 20) -> list[TrafficPolicy]:
    """The latest policy changes, newest first."""
    from flightline.platform.database import connect

    ensure_tables(settings)
    with connect(settings, settings.warehouse_db) as conn:
        return [_policy(row) for row in conn.execute(_POLICY_SQL, (limit,)).fetchall()]


def experiment_policies(conn: Any, experiment: str) -> list[TrafficPolicy]:
    """Every policy change made under an experiment name, oldest first (a canary ramp keeps its name)."""
    return [_policy(row) for row in conn.execute(f"{_POLICY_SELECT} where experiment = %s order by id", (experiment,))]


async def read_policy_async(conn: Any) -> TrafficPolicy:
    cursor = await conn.execute(_POLICY_SQL, (1,))
    row = await cursor.fetchone()
    return _policy(row) if row else DEFAULT_POLICY
