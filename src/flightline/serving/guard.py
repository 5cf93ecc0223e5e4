"""The rollback guard: a policy may send the challenger's traffic back to the champion once it fails.

:func:`rollback_reason` checks the challenger's failures in this process (:class:`ChallengerTally`) and
:func:`roll_back_async` records the champion-only policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flightline.serving.policy import POLICY_LOCK, TrafficPolicy

GUARD_ACTOR = "flightline rollback guard"


@dataclass
class ChallengerTally:
    """Requests the current policy routed to the challenger in this process, and how many it failed
    (an error, a timeout or an open circuit: the champion answered them instead)."""

    policy_id: int | None = None
    routed: int = 0
    failed: int = 0

    def count(self, policy_id: int | None, routed: int, failed: int) -> None:
        if policy_id != self.policy_id:  # a new policy starts a new count
            self.policy_id, self.routed, self.failed = policy_id, 0, 0
        self.routed += routed
        self.failed += failed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def rollback_reason(policy: TrafficPolicy, tally: ChallengerTally) -> str | None:
    """Why the policy's guard rolls it back now, or None (no guard, too few requests, or few failures).

    The guard is operational, not statistical: it stops a challenger that fails, which the breaker and
    the champion only hide from callers. Which model predicts better is ``flightline serve report``'s
    question; checking a verdict again and again would inflate its false alarms.
    """
    limit, minimum = policy.rollback_failure_percent, policy.rollback_min_requests or 1
    if limit is None or tally.policy_id != policy.id or tally.routed < minimum:
        return None
    failed_percent = 100 * tally.failed / tally.routed
    if failed_percent <= limit:
        return None
    return (f"rollback guard of policy {policy.id}: the challenger failed {tally.failed} of the {tally.routed} "
            f"requests routed to it in one router replica ({failed_percent:.1f} % > {limit:g} %)")


async def roll_back_async(conn: Any, policy: TrafficPolicy, reason: str) -> bool:
    """Record the champion-only policy (same experiment, shadow off) if ``policy`` is still the latest;
    True when this call recorded it. Replicas that trip together write one row: a lock orders them, and
    the later ones find a newer policy."""
    async with conn.transaction():
        await conn.execute(POLICY_LOCK)
        cursor = await conn.execute(
            "insert into serving.traffic_policy (mode, challenger_percent, shadow, experiment, set_by, reason) "
            "select 'champion', 0, false, %s, %s, %s where (select max(id) from serving.traffic_policy) = %s",
            (policy.experiment, GUARD_ACTOR, reason, policy.id),
        )
        return cursor.rowcount == 1
