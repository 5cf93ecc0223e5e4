"""Out-of-time evaluation and the promotion rule.

A challenger is scored on the newest month(s) next to the current champion on the same rows. The
rule (:class:`PromotionRule`) is explicit data: its thresholds and every check's outcome are logged
with the run and attached to the registered version, so a promotion can always be explained.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

SLICE_COLUMNS = ("carrier_code", "origin_airport_code", "month")
"""Per-slice metrics are computed (and guarded) for each value of these columns."""


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, *, bins: int = 10) -> float:
    """Mean |observed rate - predicted probability| over equal-width probability bins, weighted by size."""
    import numpy as np

    y_true, y_prob = np.asarray(y_true, dtype=float), np.asarray(y_prob, dtype=float)
    if len(y_true) == 0:
        return float("nan")
    index = np.minimum((y_prob * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.sum() * abs(y_true[mask].mean() - y_prob[mask].mean())
    return float(error / len(y_true))


def metrics(y_true: npt.ArrayLike, y_prob: npt.ArrayLike) -> dict[str, float]:
    """AUC, log loss, calibration error, Brier score and rates of one set of predictions."""
    import numpy as np
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    y_true, y_prob = np.asarray(y_true, dtype=int), np.asarray(y_prob, dtype=float)
    both = len(np.unique(y_true)) == 2
    return {
        "auc": float(roc_auc_score(y_true, y_prob)) if both else float("nan"),
        "log_loss": float(log_loss(y_true, np.clip(y_prob, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "calibration_error": expected_calibration_error(y_true, y_prob),
        "brier": float(brier_score_loss(y_true, y_prob)),
        "positive_rate": float(y_true.mean()),
        "mean_prediction": float(y_prob.mean()),
        "rows": float(len(y_true)),
    }


def slice_metrics(
    frame: pd.DataFrame, y_true: np.ndarray, y_prob: np.ndarray, *, columns: tuple[str, ...] = SLICE_COLUMNS
) -> list[dict[str, Any]]:
    """Metrics per value of each slice column (rows: slice, value, rows, auc, log_loss, calibration_error)."""
    import numpy as np

    rows = []
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    for column in columns:
        for value, index in frame.groupby(column, sort=True).indices.items():
            m = metrics(y_true[index], y_prob[index])
            rows.append(
                {
                    "slice": column,
                    "value": str(value),
                    **{k: m[k] for k in ("rows", "auc", "log_loss", "calibration_error")},
                }
            )
    return rows


def prediction_latency(
    predict: Callable[[pd.DataFrame], Any], features: pd.DataFrame, *, calls: int = 200
) -> dict[str, float]:
    """Single-row prediction latency (p50, p95 in ms) of ``predict``, as serving calls it."""
    import numpy as np

    sample = features.iloc[: min(calls, len(features))]
    predict(sample.iloc[:1])  # warm up
    times = []
    for i in range(len(sample)):
        row = sample.iloc[i : i + 1]
        started = time.perf_counter()
        predict(row)
        times.append((time.perf_counter() - started) * 1000)
    return {"latency_p50_ms": float(np.percentile(times, 50)), "latency_p95_ms": float(np.percentile(times, 95))}


@dataclass(frozen=True)
class PromotionRule:
    """When a challenger replaces the champion: thresholds as data, each check recorded with its result."""

    min_auc: float = 0.65
    """Absolute floor: a model below it is never champion, even the first one."""
    min_auc_gain: float = 0.002
    """The challenger's AUC must beat the champion's on the same rows by at least this."""
    max_slice_auc_drop: float = 0.02
    """No slice (carrier, origin, month) may lose more AUC than this against the champion."""
    min_slice_rows: int = 300
    """Slices smaller than this are too noisy to guard and are skipped."""
    max_calibration_error: float = 0.05
    """Expected calibration error bound (probabilities are used as probabilities downstream)."""
    max_latency_p95_ms: float = 200.0
    """Single-row prediction latency bound (MLflow pyfunc, schema checks included): catches a model
    several times too slow to serve; idle p95 here is ~25 ms, ~70 ms on a busy 2-core machine."""


@dataclass
class Decision:
    """The rule's verdict with one line per check."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    rule: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, rule: PromotionRule | None = None) -> Decision:
    """Apply the rule to two evaluations on the same rows (``metrics`` + ``slices`` + latency).

    With no champion the challenger is promoted when it passes the absolute checks (the first time).
    """
    rule = rule or PromotionRule()
    failures: list[str] = []
    passes: list[str] = []
    c = challenger["metrics"]

    def check(ok: bool, text: str) -> None:
        (passes if ok else failures).append(("pass: " if ok else "FAIL: ") + text)

    check(c["auc"] >= rule.min_auc, f"AUC {c['auc']:.4f} >= floor {rule.min_auc}")
    check(
        c["calibration_error"] <= rule.max_calibration_error,
        f"calibration error {c['calibration_error']:.4f} <= {rule.max_calibration_error}",
    )
    latency = challenger["latency"]["latency_p95_ms"]
    check(latency <= rule.max_latency_p95_ms, f"p95 latency {latency:.1f} ms <= {rule.max_latency_p95_ms} ms")
    if champion is None:
        passes.append("pass: no champion yet: the first model that passes the absolute checks becomes champion")
    else:
        gain = c["auc"] - champion["metrics"]["auc"]
        check(
            gain >= rule.min_auc_gain,
            f"AUC gain {gain:+.4f} over champion v{champion.get('version')} >= {rule.min_auc_gain}",
        )
        theirs = {(s["slice"], s["value"]): s for s in champion["slices"]}
        worst = None
        for mine in challenger["slices"]:
            other = theirs.get((mine["slice"], mine["value"]))
            if other is None or mine["rows"] < rule.min_slice_rows or mine["auc"] != mine["auc"]:
                continue
            drop = other["auc"] - mine["auc"]
            if worst is None or drop > worst[0]:
                worst = (drop, f"{mine['slice']}={mine['value']}")
        if worst is not None:
            check(
                worst[0] <= rule.max_slice_auc_drop,
                f"worst slice {worst[1]} AUC drop {worst[0]:+.4f} <= {rule.max_slice_auc_drop}",
            )
    return Decision(promote=not failures, reasons=failures + passes, rule=asdict(rule))
