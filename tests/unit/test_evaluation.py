"""Evaluation metrics and the promotion rule's decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flightline.models.evaluation import PromotionRule, decide, expected_calibration_error, metrics, slice_metrics


def _evaluation(auc: float, *, ece: float = 0.01, p95: float = 5.0, slices: dict[str, float] | None = None) -> dict:
    return {
        "metrics": {"auc": auc, "calibration_error": ece, "log_loss": 0.5},
        "latency": {"latency_p50_ms": p95 / 2, "latency_p95_ms": p95},
        "slices": [{"slice": "carrier_code", "value": k, "rows": 1000.0, "auc": v} for k, v in (slices or {}).items()],
        "version": "1",
    }


def test_calibration_error_is_zero_when_rates_match_and_large_when_not() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p + 0.2, 0, 1)) > 0.15


def test_metrics_and_slices() -> None:
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array([0.1, 0.9, 0.2, 0.8, 0.7, 0.3])
    m = metrics(y, p)
    assert m["auc"] == 1.0 and m["rows"] == 6 and 0 < m["log_loss"] < 0.4
    frame = pd.DataFrame({"carrier_code": list("AABBCC"), "origin_airport_code": ["EWR"] * 6, "month": [1] * 6})
    rows = slice_metrics(frame, y, p)
    assert {(r["slice"], r["value"]) for r in rows} >= {("carrier_code", "A"), ("origin_airport_code", "EWR")}


def test_first_model_is_promoted_when_it_passes_the_absolute_checks() -> None:
    assert decide(_evaluation(0.70), None).promote
    assert not decide(_evaluation(0.60), None).promote  # below the floor
    assert not decide(_evaluation(0.70, ece=0.2), None).promote
    assert not decide(_evaluation(0.70, p95=500), None).promote


def test_challenger_needs_a_margin_and_no_slice_much_worse() -> None:
    rule = PromotionRule(min_auc_gain=0.005, max_slice_auc_drop=0.02)
    champion = _evaluation(0.72, slices={"UA": 0.72, "AA": 0.70})
    assert decide(_evaluation(0.73, slices={"UA": 0.73, "AA": 0.71}), champion, rule).promote
    small = decide(_evaluation(0.722, slices={"UA": 0.73, "AA": 0.71}), champion, rule)
    assert not small.promote and any(r.startswith("FAIL: AUC gain") for r in small.reasons)
    slice_drop = decide(_evaluation(0.74, slices={"UA": 0.76, "AA": 0.65}), champion, rule)
    assert not slice_drop.promote and any("carrier_code=AA" in r and r.startswith("FAIL") for r in slice_drop.reasons)
    assert slice_drop.rule["max_slice_auc_drop"] == 0.02
