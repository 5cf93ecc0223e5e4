"""Training: windows, point-in-time training sets, LightGBM runs in MLflow, and their evaluation.

Each step writes what the next one needs (parquet training sets under the platform home, an MLflow
run) and returns small JSON, so Airflow tasks stay thin and reruns find their earlier results: a
training set with the same digest and a finished run for the same DAG run are reused, not redone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flightline.features import definitions as F
from flightline.platform.errors import FlightlineConfigError

if TYPE_CHECKING:
    import pandas as pd

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

EXPERIMENT = "flight_delay"
SEED = 13
DEFAULT_HYPERPARAMETERS: dict[str, float | int] = {
    "num_leaves": 63,
    "learning_rate": 0.05,
    "n_estimators": 600,
    "min_child_samples": 200,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "lambda_l2": 1.0,
}
"""LightGBM defaults; a manual DAG run may override any of them."""


@dataclass(frozen=True)
class Window:
    """Months (first day of each) of training and out-of-time evaluation, inclusive."""

    train_start: dt.date
    train_end: dt.date
    eval_start: dt.date
    eval_end: dt.date

    def as_dict(self) -> dict[str, str]:
        return {k: v.strftime("%Y-%m") for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Window:
        return cls(**{k: parse_month(v) for k, v in data.items()})


HOLDOUT_PARAMS = {"train_start": "2013-01", "train_end": "2013-09", "eval_start": "2013-10", "eval_end": "2013-12"}
"""The example's temporal holdout (demo and benchmark): train on Jan-Sep 2013, evaluate on Oct-Dec."""


def manual_logical_date() -> dt.datetime:
    """A logical date for a manual run of the 2013 training DAG.

    The DAG's dates cover 2013 only, and a run outside them gets no tasks; the seconds of today make
    each run's date unique (Airflow allows one run per logical date).
    """
    import time

    return dt.datetime(2013, 12, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=int(time.time()) % 86400)


def parse_month(value: str | dt.date) -> dt.date:
    """``YYYY-MM`` (or a date) as the first day of that month."""
    if isinstance(value, dt.date):
        return value.replace(day=1)
    try:
        return dt.datetime.strptime(value.strip(), "%Y-%m").date()
    except ValueError as exc:
        raise FlightlineConfigError(f"month {value!r} is not YYYY-MM, e.g. 2013-09") from exc


def _add_months(month: dt.date, n: int) -> dt.date:
    index = month.year * 12 + month.month - 1 + n
    return dt.date(index // 12, index % 12 + 1, 1)


def resolve_window(params: dict[str, Any], run_month: dt.date) -> Window | None:
    """The run's window: params win; otherwise evaluate on ``run_month`` and train on the months of
    its year before it. None when a scheduled run has nothing before it to train on (January).

    Raises:
        FlightlineConfigError: on unparsable months, empty windows or a training window that is not
            entirely before the evaluation window.
    """
    explicit = any(params.get(k) for k in ("train_start", "train_end", "eval_start", "eval_end"))
    eval_end = parse_month(params.get("eval_end") or run_month)
    eval_start = parse_month(params.get("eval_start") or eval_end)
    train_end = parse_month(params.get("train_end") or _add_months(eval_start, -1))
    train_start = parse_month(params.get("train_start") or eval_start.replace(month=1))
    if not explicit and train_end < train_start:
        return None
    if train_end < train_start or eval_end < eval_start:
        raise FlightlineConfigError(
            f"training window {train_start:%Y-%m}..{train_end:%Y-%m} or evaluation window "
            f"{eval_start:%Y-%m}..{eval_end:%Y-%m} is empty; give start <= end"
        )
    if train_end >= eval_start:
        raise FlightlineConfigError(
            f"training window ends {train_end:%Y-%m}, not before the evaluation window starts "
            f"{eval_start:%Y-%m}: evaluation must be out of time"
        )
    return Window(train_start, train_end, eval_start, eval_end)


def run_key(pipeline: str, window: Window) -> str:
    """What makes two runs the same run: the pipeline and its windows (the data digest and the
    hyperparameters are checked on top), so a rerun or a retrigger reuses the earlier results."""
    w = window.as_dict()
    return f"{pipeline}/{w['train_start']}..{w['train_end']}/{w['eval_start']}..{w['eval_end']}"


def month_bounds(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of local (New York) months first..last inclusive."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(F.LOCAL_TZ)
    after = _add_months(last, 1)
    start = dt.datetime(first.year, first.month, 1, tzinfo=zone).astimezone(dt.UTC)
    end = dt.datetime(after.year, after.month, 1, tzinfo=zone).astimezone(dt.UTC)
    return start, end


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 of a frame's columns and values (equal content, equal digest)."""
    import pandas as pd

    digest = hashlib.sha256(json.dumps([str(c) for c in frame.columns]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def build_training_sets(settings: Settings, window: Window, *, run_key: str) -> dict[str, Any]:
    """Read point-in-time training and evaluation sets from Feast and store them as parquet.

    Returns:
        Paths, digests and row counts of both sets.
    """
    from flightline.features.store import flight_features

    folder = settings.home / "training_sets" / _safe(run_key)
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"window": window.as_dict()}
    for part, (first, last) in {
        "train": (window.train_start, window.train_end),
        "eval": (window.eval_start, window.eval_end),
    }.items():
        start, end = month_bounds(first, last)
        frame = flight_features(settings, start, end)
        if frame.empty:
            raise FlightlineConfigError(
                f"no flights in {part} window {first:%Y-%m}..{last:%Y-%m}; extract that data first"
            )
        path = folder / f"{part}.parquet"
        frame.to_parquet(path, index=False)
        result[part] = {
            "path": str(path),
            "digest": frame_digest(frame),
            "rows": len(frame),
            "positive_rate": float(frame[F.LABEL].mean()),
        }
    return result


def git_commit(settings: Settings) -> str:
    """The project's git commit (``unknown`` outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings.project_dir, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def train(
    settings: Settings,
    training_sets: dict[str, Any],
    *,
    run_key: str,
    hyperparameters: dict[str, Any] | None = None,
    delta_versions: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Train LightGBM on the training set and log a complete MLflow run (reused on rerun).

    Returns:
        run_id, model_uri and the validation metrics.
    """
    import lightgbm as lgb
    import mlflow
    import pandas as pd

    from flightline.models import evaluation, registry

    params = {**DEFAULT_HYPERPARAMETERS, **{k: v for k, v in (hyperparameters or {}).items() if v is not None}}
    digest = training_sets["train"]["digest"]
    registry.client(settings)
    experiment = mlflow.set_experiment(EXPERIMENT)
    previous = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`flightline.run_key` = '{run_key}' and tags.`flightline.training_set_digest` = '{digest}' "
        "and attributes.status = 'FINISHED'",
        output_format="list",
    )
    for run in previous:
        if (
            run.data.tags.get("flightline.model_uri")
            and json.loads(run.data.tags.get("flightline.params", "{}")) == params
        ):
            log.info("reusing run %s of %s", run.info.run_id, run_key)
            return {"run_id": run.info.run_id, "model_uri": run.data.tags["flightline.model_uri"], "reused": True}

    frame = pd.read_parquet(training_sets["train"]["path"]).sort_values("event_timestamp", kind="stable")
    X, y = frame[F.FEATURE_NAMES], frame[F.LABEL].astype(int)
    cut = int(len(frame) * 0.9)  # the last 10% in time: early stopping out of time, like production
    lgb_params = {
        "objective": "binary",
        "metric": "auc",
        "num_threads": 1,
        "seed": SEED,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
        "bagging_freq": 1,
        **{k: v for k, v in params.items() if k != "n_estimators"},
    }
    train_set = lgb.Dataset(X.iloc[:cut], y.iloc[:cut], free_raw_data=False)
    valid_set = lgb.Dataset(X.iloc[cut:], y.iloc[cut:], reference=train_set)
    booster = lgb.train(
        lgb_params,
        train_set,
        num_boost_round=int(params["n_estimators"]),
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    valid_metrics = evaluation.metrics(
        y.iloc[cut:].to_numpy(), booster.predict(X.iloc[cut:], num_iteration=booster.best_iteration)
    )
    final = lgb.train(lgb_params, lgb.Dataset(X, y), num_boost_round=max(booster.best_iteration, 1))

    with mlflow.start_run(
        run_name=f"flight_delay {training_sets['window']['train_start']}..{training_sets['window']['train_end']}"
    ) as run:
        mlflow.set_tags(
            {
                "flightline.run_key": run_key,
                "flightline.training_set_digest": digest,
                "flightline.eval_set_digest": training_sets["eval"]["digest"],
                "flightline.delta_versions": json.dumps(delta_versions or {}, sort_keys=True),
                "flightline.git_commit": git_commit(settings),
                "flightline.feature_service": F.FEATURE_SERVICE,
                "flightline.features": json.dumps(F.FEATURE_NAMES),
                "flightline.params": json.dumps(params, sort_keys=True),
                "mlflow.source.git.commit": git_commit(settings),
            }
        )
        mlflow.log_params(
            {
                **params,
                **{f"window_{k}": v for k, v in training_sets["window"].items()},
                "train_rows": training_sets["train"]["rows"],
                "best_iteration": booster.best_iteration,
                "seed": SEED,
                "feature_service": F.FEATURE_SERVICE,
            }
        )
        mlflow.log_metrics({f"valid_{k}": v for k, v in valid_metrics.items()})
        mlflow.log_dict(
            {
                "features": F.FEATURE_NAMES,
                "feature_service": F.FEATURE_SERVICE,
                "feature_views": F.FEATURE_VIEWS,
                "prediction_lead_hours": F.PREDICTION_LEAD.total_seconds() / 3600,
            },
            "features.json",
        )
        mlflow.log_dict(training_sets, "training_sets.json")
        mlflow.log_figure(_importance_figure(final), "plots/feature_importance.png")
        info = mlflow.lightgbm.log_model(
            final,
            name="model",
            signature=mlflow.models.infer_signature(X.head(50), final.predict(X.head(50))),
            pip_requirements=_pip_requirements(),
        )
        mlflow.set_tag("flightline.model_uri", info.model_uri)
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "valid_auc": valid_metrics["auc"], "reused": False}


def evaluate(settings: Settings, run_id: str, training_sets: dict[str, Any]) -> dict[str, Any]:
    """Score the run's model and the champion on the evaluation set; apply the promotion rule; log all.

    Returns:
        Both evaluations and the decision (JSON).
    """
    import mlflow
    import pandas as pd

    from flightline.models import evaluation, registry

    registry.client(settings)
    frame = pd.read_parquet(training_sets["eval"]["path"])
    X, y = frame[F.FEATURE_NAMES], frame[F.LABEL].astype(int).to_numpy()
    run = mlflow.get_run(run_id)
    model = mlflow.pyfunc.load_model(run.data.tags["flightline.model_uri"])
    challenger = _score(model, X, y, frame)
    champion = None
    current = registry.alias_version(settings, registry.CHAMPION)
    if current is not None and current.run_id != run_id:
        champion_model, _ = registry.load_model(settings, registry.CHAMPION)
        inputs = [c.name for c in champion_model.metadata.get_input_schema().inputs]
        if set(inputs) <= set(frame.columns):
            champion = {**_score(champion_model, frame[inputs], y, frame), "version": str(current.version)}
        else:
            log.warning(
                "champion v%s reads features this set lacks: %s", current.version, set(inputs) - set(frame.columns)
            )
    predictions = challenger.pop("_predictions")
    if champion is not None:
        champion.pop("_predictions")
    rule = evaluation.PromotionRule()
    decision = evaluation.decide(challenger, champion, rule)
    window = training_sets["window"]
    result = {
        "run_id": run_id,
        "eval_window": f"{window['eval_start']}..{window['eval_end']}",
        "challenger": challenger,
        "champion": champion,
        "decision": decision.as_dict(),
    }
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"eval_{k}": v for k, v in {**challenger["metrics"], **challenger["latency"]}.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion_eval_{k}": v for k, v in champion["metrics"].items()})
        mlflow.log_dict(result, "evaluation.json")
        mlflow.set_tags(
            {
                "flightline.decision": "promote" if decision.promote else "keep champion",
                "flightline.promotion_rule": json.dumps(decision.rule),
            }
        )
        _log_plots(y, predictions, frame, challenger["slices"])
    return result


def _score(model: Any, X: pd.DataFrame, y: Any, frame: pd.DataFrame) -> dict[str, Any]:
    from flightline.models import evaluation

    predictions = _probabilities(model.predict(X))
    return {
        "metrics": evaluation.metrics(y, predictions),
        "slices": evaluation.slice_metrics(frame, y, predictions),
        "latency": evaluation.prediction_latency(model.predict, X),
        "_predictions": predictions,
    }


def _probabilities(output: Any) -> Any:
    import numpy as np

    values = np.asarray(output, dtype=float)
    return values[:, -1] if values.ndim == 2 else values


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "lightgbm", "pandas", "numpy", "scikit-learn")]


def _importance_figure(booster: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = sorted(zip(booster.feature_name(), booster.feature_importance("gain"), strict=True), key=lambda t: t[1])
    fig, ax = plt.subplots(figsize=(7, 10))
    ax.barh([n for n, _ in gains], [g for _, g in gains])
    ax.set_title("Feature importance (gain)")
    fig.tight_layout()
    return fig


def _log_plots(y: Any, predictions: Any, frame: pd.DataFrame, slices: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import pandas as pd
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, predictions)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (out of time)")
    mlflow.log_figure(fig, "plots/roc.png")
    observed, predicted = calibration_curve(y, predictions, n_bins=10)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(predicted, observed, marker="o")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="predicted probability", ylabel="observed delay rate", title="Calibration (out of time)")
    mlflow.log_figure(fig, "plots/calibration.png")
    table = pd.DataFrame(slices)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, (name, part) in zip(axes, table.groupby("slice"), strict=False):
        ax.barh(part["value"], part["auc"])
        ax.set(title=f"AUC by {name}", xlim=(0.5, 1.0))
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/slices.png")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slice_metrics.csv"
        table.to_csv(path, index=False)
        mlflow.log_artifact(str(path), "evaluation")
    plt.close("all")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
