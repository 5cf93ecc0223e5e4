"""Experiment reports: how the champion and the challenger did under one experiment's traffic policies.

An experiment is every ``serving.traffic_policy`` row with its name: a canary ramped 5 -> 25 % keeps one
name, and sticky hashing keeps each key in its arm through the ramp. From ``serving.prediction_log``:

- arms by the variant the policy routed a request to (``routed_variant``), whoever answered it: a
  challenger request that the champion answered after a challenger failure stays in the challenger arm
  (intention to treat), so a failing challenger cannot look better by shedding requests;
- outcomes from ``marts.flights`` (``is_delayed``, once its ``outcome_known_at`` has passed), joined on the
  flight's carrier, number, airports and scheduled departure; Brier score, log loss and AUC per arm
  (AUC as a point estimate: how well each arm's model ranks the flights it scored);
- challenger minus champion with a 95 % interval. Requests with one sticky key (a flight asked for again,
  one user's flights) always land in the same arm and are not independent, so standard errors are
  clustered by the key (CR1); a verdict names a winner only when the whole interval is on one side of 0;
- shadow pairs (the challenger's logged score of a request the champion answered): how far apart the
  two models are, and the paired loss difference where the outcome is known.

Rows logged before ``routed_variant`` existed have no arm; they are counted, not guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flightline.platform.errors import NotFoundError
from flightline.serving.policy import CHALLENGER, CHAMPION, current_policy, experiment_policies
from flightline.serving.tables import ensure_tables

if TYPE_CHECKING:
    from flightline.platform.config import Settings

MIN_OUTCOMES = 30
"""Known outcomes an arm (or the shadow pairs) needs before a verdict is given."""
Z95 = 1.959963984540054
LOSSES = ("brier", "log_loss")

_OUTCOME = """left join (
        select carrier_code, flight_number, origin_airport_code, dest_airport_code, scheduled_departure_at,
               bool_or(is_delayed)::int as outcome
        from marts.flights
        where outcome_known_at <= now()
        group by 1, 2, 3, 4, 5
    ) f on f.carrier_code = l.request->>'carrier'
       and f.flight_number = (l.request->>'flight_number')::int
       and f.origin_airport_code = l.request->>'origin'
       and f.dest_airport_code = l.request->>'destination'
       and f.scheduled_departure_at = (l.request->>'scheduled_departure')::timestamptz"""

# the experiment's rows, read once into a temporary table that the queries below call ``logged``
_LOGGED = """create temporary table logged on commit drop as
    select l.request_id, l.is_shadow, l.variant, l.routed_variant, l.model_version, l.sticky_key, l.prediction,
           l.latency_ms, l.logged_at, {outcome} as outcome
    from serving.prediction_log l
    {join}
    where l.policy_id in (select id from serving.traffic_policy where experiment = %(experiment)s)"""

_ARMS = """
select routed_variant, count(*), count(distinct sticky_key),
       count(*) filter (where variant <> routed_variant), count(*) filter (where variant = 'fallback'),
       avg(prediction), percentile_cont(0.5) within group (order by latency_ms),
       percentile_cont(0.99) within group (order by latency_ms), min(logged_at), max(logged_at)
from logged where not is_shadow and routed_variant is not null
group by 1"""

_VERSIONS = """
select routed_variant, variant, model_version, count(*)
from logged where not is_shadow and routed_variant is not null
group by 1, 2, 3 order by 1, 2, 3"""

_UNASSIGNED = "select count(*) from logged where not is_shadow and routed_variant is null"

# per-row losses of a probability column {p} against the 0/1 outcome; log loss clips p as scikit-learn does
_BRIER = "power({p} - outcome, 2)"
_LOG_LOSS = "-(outcome * ln(greatest({p}, 1e-15)) + (1 - outcome) * ln(greatest(1 - {p}, 1e-15)))"

_ARM_LOSSES = f"""
with losses as (
    select routed_variant as grp, sticky_key as key, outcome, {_BRIER.format(p="prediction")} as brier,
           {_LOG_LOSS.format(p="prediction")} as log_loss
    from logged
    where not is_shadow and routed_variant is not null and prediction is not null and outcome is not null
)"""

# AUC per arm by Mann-Whitney: the positives' mean rank among the arm's scored rows, ties at their average rank
_ARM_AUC = """
with ranked as (
    select routed_variant as grp, outcome,
           rank() over (partition by routed_variant order by prediction)
             + (count(*) over (partition by routed_variant, prediction) - 1) / 2.0 as rank
    from logged
    where not is_shadow and routed_variant is not null and prediction is not null and outcome is not null
)
select grp, count(*) filter (where outcome = 1), count(*) filter (where outcome = 0),
       sum(rank) filter (where outcome = 1)
from ranked group by grp"""

_PAIRS = """
with pairs as (
    select s.sticky_key as key, s.prediction as challenger, c.prediction as champion, c.outcome
    from logged s join logged c on c.request_id = s.request_id and not c.is_shadow and c.variant = 'champion'
    where s.is_shadow
)"""

_PAIR_LOSSES = f"""{_PAIRS}
, losses as (
    select 'shadow' as grp, key, outcome,
           {_BRIER.format(p="challenger")} - {_BRIER.format(p="champion")} as brier,
           {_LOG_LOSS.format(p="challenger")} - {_LOG_LOSS.format(p="champion")} as log_loss
    from pairs where challenger is not null and outcome is not null
)"""

_SHADOW = f"""{_PAIRS}
select count(*) filter (where challenger is not null), count(*) filter (where challenger is null),
       avg(abs(challenger - champion)), percentile_cont(0.95) within group (order by abs(challenger - champion)),
       max(abs(challenger - champion))
from pairs"""

# Per group: the mean of each loss over rows, and the sum over keys of (a key's summed residuals)^2 / n^2,
# the clustered variance of that mean before the CR1 factor keys / (keys - 1).
_CLUSTERED = """
, clusters as (
    select grp, key, count(*) as n, avg(outcome) as rate, sum(brier) as brier, sum(log_loss) as log_loss
    from losses group by grp, key
), totals as (
    select grp, sum(n)::bigint as n, count(*) as keys, (sum(rate * n) / sum(n))::float8 as rate,
           sum(brier) / sum(n) as brier, sum(log_loss) / sum(n) as log_loss
    from clusters group by grp
)
select t.grp, t.n, t.keys, t.rate, t.brier, sum(power(c.brier - c.n * t.brier, 2)) / power(t.n, 2),
       t.log_loss, sum(power(c.log_loss - c.n * t.log_loss, 2)) / power(t.n, 2)
from totals t join clusters c using (grp)
group by t.grp, t.n, t.keys, t.rate, t.brier, t.log_loss"""


@dataclass(frozen=True)
class Estimate:
    """A mean loss with the variance of that mean, clustered by sticky key."""

    mean: float
    variance: float

    @classmethod
    def clustered(cls, mean: float, raw_variance: float, keys: int) -> Estimate:
        """CR1: the summed-residual variance scaled by keys / (keys - 1); one key gives no interval."""
        return cls(float(mean), float(raw_variance) * keys / (keys - 1) if keys > 1 else math.inf)

    def minus(self, other: Estimate) -> Estimate:
        """Difference of two independent arms' means."""
        return Estimate(self.mean - other.mean, self.variance + other.variance)

    def interval(self) -> list[float]:
        half = Z95 * math.sqrt(self.variance)
        return [self.mean - half, self.mean + half]

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": self.interval()}


def verdict(difference: Estimate, *, enough: bool) -> str:
    """A challenger-minus-champion loss difference read out: lower loss is better."""
    if not enough:
        return f"too few known outcomes (need {MIN_OUTCOMES} per arm)"
    low, high = difference.interval()
    if high < 0:
        return "challenger better"
    if low > 0:
        return "champion better"
    return "no significant difference"


def _compare(difference: dict[str, Estimate], *, enough: bool) -> dict[str, Any]:
    return {
        loss: {"difference": est.mean, "ci95": est.interval(), "verdict": verdict(est, enough=enough)}
        for loss, est in difference.items()
    }


def experiment_report(settings: Settings, experiment: str | None = None) -> dict[str, Any]:
    """The report for ``experiment`` (default: the current policy's); NotFoundError for an unknown name."""
    from flightline.platform.database import connect

    ensure_tables(settings)
    experiment = experiment or current_policy(settings).experiment
    with connect(settings, settings.warehouse_db) as conn:
        policies = experiment_policies(conn, experiment)
        if not policies:
            known = [r[0] for r in conn.execute("select distinct experiment from serving.traffic_policy order by 1")]
            raise NotFoundError(f"no traffic policy has experiment {experiment!r}; known: {known}")
        row = conn.execute("select to_regclass('marts.flights') is not null").fetchone()
        has_outcomes = row is not None and row[0]
        conn.execute(_LOGGED.format(outcome="f.outcome" if has_outcomes else "null::int",
                                    join=_OUTCOME if has_outcomes else ""), {"experiment": experiment})

        def run(sql: str) -> list[tuple[Any, ...]]:
            return conn.execute(sql).fetchall()

        arms: dict[str, dict[str, Any]] = {}
        for arm, requests, keys, other, fallback, mean_p, p50, p99, first, last in run(_ARMS):
            arms[arm] = {
                "requests": requests, "keys": keys, "answered_by_other": other, "fallback": fallback,
                "mean_prediction": mean_p, "latency_ms": {"p50": p50, "p99": p99},
                "first_logged_at": first.isoformat(), "last_logged_at": last.isoformat(), "versions": [],
                "outcomes": {"known": 0},
            }
        for arm, answered_by, version, count in run(_VERSIONS):
            arms[arm]["versions"].append({"answered_by": answered_by, "version": version, "requests": count})
        losses = _losses(run(_ARM_LOSSES + _CLUSTERED))
        aucs = {grp: _auc(positives, negatives, rank_sum) for grp, positives, negatives, rank_sum in run(_ARM_AUC)}
        for arm, (n, rate, estimates) in losses.items():
            arms[arm]["outcomes"] = {"known": n, "delay_rate": rate, "auc": aucs.get(arm),
                                     **{loss: est.as_dict() for loss, est in estimates.items()}}
        report: dict[str, Any] = {
            "experiment": experiment,
            "policies": [policy.as_dict() for policy in policies],
            "outcomes_from": "marts.flights" if has_outcomes else None,
            "arms": arms,
            "requests_without_arm": run(_UNASSIGNED)[0][0],
        }
        if CHAMPION in arms and CHALLENGER in arms:
            if CHAMPION in losses and CHALLENGER in losses:
                enough = min(losses[CHAMPION][0], losses[CHALLENGER][0]) >= MIN_OUTCOMES
                champion, challenger = losses[CHAMPION][2], losses[CHALLENGER][2]
                report["challenger_minus_champion"] = _compare(
                    {loss: challenger[loss].minus(champion[loss]) for loss in LOSSES}, enough=enough
                )
            else:  # an arm without one known outcome: nothing to compare yet, said so
                report["challenger_minus_champion"] = {
                    loss: {"difference": None, "ci95": None, "verdict": verdict(Estimate(0, 0), enough=False)}
                    for loss in LOSSES
                }
        pairs, failed, mean_abs, p95_abs, max_abs = run(_SHADOW)[0]
        if pairs or failed:
            shadow: dict[str, Any] = {"pairs": pairs, "challenger_failed": failed, "abs_difference": {
                "mean": mean_abs, "p95": p95_abs, "max": max_abs}, "outcomes_known": 0}
            paired = _losses(run(_PAIR_LOSSES + _CLUSTERED)).get("shadow")
            if paired:
                n, _, estimates = paired
                shadow["outcomes_known"] = n
                shadow["challenger_minus_champion"] = _compare(estimates, enough=n >= MIN_OUTCOMES)
            report["shadow"] = shadow
        return report


def _auc(positives: int, negatives: int, positive_rank_sum: Any) -> float | None:
    """ROC AUC from the positives' rank sum; None until both outcomes occur (it is undefined)."""
    if not positives or not negatives:
        return None
    return (float(positive_rank_sum) - positives * (positives + 1) / 2) / (positives * negatives)


def _losses(rows: list[tuple[Any, ...]]) -> dict[str, tuple[int, float, dict[str, Estimate]]]:
    """Rows of ``_CLUSTERED`` -> {group: (known outcomes, delay rate, {loss: estimate})}."""
    return {
        grp: (n, rate, {
            "brier": Estimate.clustered(brier, brier_var, keys),
            "log_loss": Estimate.clustered(log_loss, log_loss_var, keys),
        })
        for grp, n, keys, rate, brier, brier_var, log_loss, log_loss_var in rows
    }
