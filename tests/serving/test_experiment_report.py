"""`flightline serve report` over real traffic: an A/B experiment with shadow through the platform's router
(real HTTP), outcomes in marts.flights, and the report checked against numbers computed here from the
responses, the outcomes and the log."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest
from serving_fixtures import (
    CARRIER,
    DEPARTURE,
    DEST,
    ORIGIN,
    TAIL,
    flight,
    log_rows,
    seed_flight,
    set_alias,
    set_policy,
    wait_for_log,
    wait_for_versions,
)

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration

PREDICT = "/v1/predict/flight-delay"
NUMBERS = range(6000, 6240)
"""240 flights: outcomes known for the first 200, due tomorrow for the next 20, absent for the last 20."""
Z95 = 1.959963984540054


def _departure(number: int) -> dt.datetime:
    return DEPARTURE + dt.timedelta(minutes=15 * (number % 8))


def _is_delayed(number: int) -> bool:
    return number % 3 == 0


def _write_outcomes(settings: Settings) -> None:
    """The flights as marts.flights rows, as dbt would write them once the flights have landed."""
    from flightline.platform.database import connect

    seed_flight(settings)  # marts.flights exists (built by dbt, or this fixture's minimal table)
    now = dt.datetime.now(dt.UTC)
    rows = [
        (f"report-{n}", CARRIER, n, TAIL, ORIGIN, DEST, f"{ORIGIN}-{DEST}", _departure(n), _departure(n).month,
         _is_delayed(n), now - dt.timedelta(hours=1) if n < NUMBERS[200] else now + dt.timedelta(days=1))
        for n in NUMBERS[:220]
    ]
    with connect(settings, settings.warehouse_db, autocommit=True) as conn:
        conn.execute("delete from marts.flights where flight_id like 'report-%'")
        conn.cursor().executemany(
            "insert into marts.flights (flight_id, carrier_code, flight_number, tail_number, origin_airport_code, "
            "dest_airport_code, route_code, scheduled_departure_at, month, is_delayed, outcome_known_at) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)


def _clustered(losses: list[float], keys: list[str]) -> tuple[float, float]:
    """Mean and CR1 variance of the mean, clustered by key: the report's statistics, written again in numpy."""
    values, labels = np.asarray(losses), np.asarray(keys)
    mean = values.mean()
    sums = np.array([(values[labels == k] - mean).sum() for k in np.unique(labels)])
    k = len(sums)
    return float(mean), float((sums**2).sum() / len(values) ** 2 * k / (k - 1))


def _interval(mean: float, variance: float) -> list[float]:
    return [mean - Z95 * math.sqrt(variance), mean + Z95 * math.sqrt(variance)]


def test_ab_report_scores_each_arm_against_outcomes_and_pairs_the_shadow(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    from sklearn.metrics import roc_auc_score
    from typer.testing import CliRunner

    from flightline.cli.main import app
    from flightline.platform.database import connect

    experiment = f"report-{uuid.uuid4().hex[:8]}"
    set_policy(platform, mode="ab", challenger_percent=50, experiment=experiment, shadow=True)
    bodies = [flight(flight_number=n, scheduled_departure=_departure(n).isoformat()) for n in NUMBERS]
    answers = httpx.post(f"{serve_url}{PREDICT}/batch", json={"flights": bodies}, timeout=60).json()["predictions"]
    repeats = [httpx.post(f"{serve_url}{PREDICT}", json=body, timeout=30).json() for body in bodies[:60]]
    set_policy(platform, mode="champion")
    numbers = [*NUMBERS, *NUMBERS[:60]]
    answers += repeats
    ids = [a["request_id"] for a in answers]
    champion_answered = sum(a["variant"] == "champion" for a in answers)
    logged = wait_for_log(platform, ids, len(answers) + champion_answered)
    _write_outcomes(platform)
    try:
        result = CliRunner().invoke(app, ["serve", "report", "--experiment", experiment])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
    finally:
        with connect(platform, platform.warehouse_db, autocommit=True) as conn:
            conn.execute("delete from marts.flights where flight_id like 'report-%'")

    assert [(p["mode"], p["challenger_percent"], p["shadow"]) for p in report["policies"]] == [("ab", 50, True)]
    assert report["requests_without_arm"] == 0
    keys = {row[0]: row[8] for row in logged if not row[3]}
    assert {keys[a["request_id"]] for a in repeats} == {f"{CARRIER}{n}:{DEPARTURE.date()}" for n in NUMBERS[:60]}
    arms = report["arms"]
    assert set(arms) == {"champion", "challenger"}
    known = {n: _is_delayed(n) for n in NUMBERS[:200]}
    for arm, got in arms.items():
        mine = [i for i, a in enumerate(answers) if a["variant"] == arm]
        assert got["requests"] == len(mine) and got["answered_by_other"] == 0 and got["fallback"] == 0
        assert got["keys"] == len({numbers[i] for i in mine})
        assert got["versions"] == [{"answered_by": arm, "version": models[arm], "requests": len(mine)}]
        assert got["mean_prediction"] == pytest.approx(np.mean([answers[i]["delay_probability"] for i in mine]))
        scored = [i for i in mine if numbers[i] in known]
        p = np.array([answers[i]["delay_probability"] for i in scored])
        y = np.array([known[numbers[i]] for i in scored], dtype=float)
        assert got["outcomes"]["known"] == len(scored) and got["outcomes"]["delay_rate"] == pytest.approx(y.mean())
        assert got["outcomes"]["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
        for loss, values in (("brier", (p - y) ** 2), ("log_loss", -(y * np.log(p) + (1 - y) * np.log(1 - p)))):
            mean, variance = _clustered(list(values), [str(numbers[i]) for i in scored])
            assert got["outcomes"][loss]["mean"] == pytest.approx(mean, rel=1e-9)
            assert got["outcomes"][loss]["ci95"] == pytest.approx(_interval(mean, variance), rel=1e-9)
    for loss, diff in report["challenger_minus_champion"].items():
        challenger, champion = arms["challenger"]["outcomes"][loss], arms["champion"]["outcomes"][loss]
        assert diff["difference"] == pytest.approx(challenger["mean"] - champion["mean"])
        half = math.hypot(*(o["ci95"][1] - o["mean"] for o in (challenger, champion)))
        assert diff["ci95"] == pytest.approx([diff["difference"] - half, diff["difference"] + half])
        low, high = diff["ci95"]
        assert diff["verdict"] == ("challenger better" if high < 0 else "champion better" if low > 0
                                   else "no significant difference")

    shadow = {row[0]: row[4] for row in log_rows(platform, ids) if row[3]}
    live = {a["request_id"]: a["delay_probability"] for a in answers if a["variant"] == "champion"}
    assert set(shadow) == set(live)
    gaps = [abs(shadow[r] - live[r]) for r in live]
    assert report["shadow"]["pairs"] == len(live) and report["shadow"]["challenger_failed"] == 0
    assert report["shadow"]["abs_difference"]["mean"] == pytest.approx(np.mean(gaps))
    assert report["shadow"]["abs_difference"]["max"] == pytest.approx(max(gaps))
    paired = [i for i, a in enumerate(answers) if a["variant"] == "champion" and numbers[i] in known]
    assert report["shadow"]["outcomes_known"] == len(paired)


def test_report_before_any_outcome_is_known_gives_no_verdict(serve_url: str, platform: Settings) -> None:
    from flightline.serving.experiments import experiment_report

    experiment = f"fresh-{uuid.uuid4().hex[:8]}"
    set_policy(platform, mode="ab", challenger_percent=50, experiment=experiment)
    bodies = [flight(flight_number=n) for n in range(8000, 8040)]  # not in marts.flights: departing later
    answers = httpx.post(f"{serve_url}{PREDICT}/batch", json={"flights": bodies}, timeout=60).json()["predictions"]
    set_policy(platform, mode="champion")
    wait_for_log(platform, [a["request_id"] for a in answers], len(answers))
    report = experiment_report(platform, experiment)
    assert {arm: got["requests"] for arm, got in report["arms"].items()} == {
        v: sum(a["variant"] == v for a in answers) for v in ("champion", "challenger")
    }
    assert all(got["outcomes"] == {"known": 0} for got in report["arms"].values())
    assert {c["verdict"] for c in report["challenger_minus_champion"].values()} == {
        "too few known outcomes (need 30 per arm)"
    }
    assert "shadow" not in report


def test_report_names_an_unknown_experiment_and_the_known_ones(serve_url: str, platform: Settings) -> None:
    from typer.testing import CliRunner

    from flightline.cli.main import app

    result = CliRunner().invoke(app, ["serve", "report", "--experiment", "no-such-experiment"])
    assert result.exit_code == 2
    assert "no traffic policy has experiment 'no-such-experiment'" in result.output and "known: [" in result.output


def test_challenger_failures_stay_in_the_challenger_arm(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    """Intention to treat: requests routed to a failing challenger are answered by the champion and counted
    in the challenger's arm, so a failing challenger cannot shed its requests."""
    from flightline.serving.experiments import experiment_report

    experiment = f"failing-{uuid.uuid4().hex[:8]}"
    failing = platform.serve_breaker_failures - 1  # the breaker stays closed, for the tests after this one
    assert failing >= 1
    set_alias(platform, "challenger", models["broken"])
    wait_for_versions(serve_url, {"challenger": models["broken"]}, timeout=60)
    try:
        set_policy(platform, mode="canary", challenger_percent=100, experiment=experiment)
        answers = [httpx.post(f"{serve_url}{PREDICT}", json=flight(flight_number=7000 + n), timeout=30).json()
                   for n in range(failing)]
    finally:
        set_alias(platform, "challenger", models["challenger"])
        wait_for_versions(serve_url, {"challenger": models["challenger"]}, timeout=60)
    answers.append(httpx.post(f"{serve_url}{PREDICT}", json=flight(flight_number=7100), timeout=30).json())
    set_policy(platform, mode="champion")
    assert [a["variant"] for a in answers] == ["champion"] * failing + ["challenger"]
    assert all("challenger failed" in a["fallback_reason"] for a in answers[:failing])
    rows = wait_for_log(platform, [a["request_id"] for a in answers], len(answers))
    assert sorted((r[1], r[7]) for r in rows) == [("challenger", "challenger")] + [("champion", "challenger")] * failing
    report = experiment_report(platform, experiment)
    assert set(report["arms"]) == {"challenger"}
    arm = report["arms"]["challenger"]
    assert (arm["requests"], arm["answered_by_other"], arm["fallback"]) == (failing + 1, failing, 0)
    assert arm["versions"] == [
        {"answered_by": "challenger", "version": models["challenger"], "requests": 1},
        {"answered_by": "champion", "version": models["champion"], "requests": failing},
    ]
    assert "challenger_minus_champion" not in report
