"""flightline.serving.load_servable and probe_model on real MLflow models saved locally: what they let in front of
traffic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flightline.features.definitions import FEATURE_NAMES
from flightline.models.servable import load_servable, probe_model
from flightline.platform.errors import FlightlineError


def _saved(tmp_path: Path, estimator: object, X: pd.DataFrame, *, signature: bool = True) -> str:
    import mlflow

    path = tmp_path / "model"
    flavor = mlflow.lightgbm if type(estimator).__module__.startswith("lightgbm") else mlflow.sklearn
    flavor.save_model(estimator, path, input_example=X.head(2) if signature else None)
    return str(path)


def _booster(X: pd.DataFrame, y: pd.Series, objective: str) -> object:
    import lightgbm as lgb

    params = {"objective": objective, "num_threads": 1, "verbose": -1}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)


def _features(rows: int = 60) -> tuple[pd.DataFrame, pd.Series]:
    X = pd.DataFrame(np.random.default_rng(0).random((rows, len(FEATURE_NAMES))), columns=FEATURE_NAMES)
    return X, X.iloc[:, 0] > 0.5


def test_a_model_of_the_serving_features_that_handles_missing_values_passes(tmp_path: Path) -> None:
    X, y = _features()  # the trained kind: LightGBM, binary
    load_servable(_saved(tmp_path, _booster(X, y, "binary"), X))


def test_inputs_serving_does_not_have_are_named(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame(np.random.default_rng(1).random((20, 2)), columns=["carrier_delay_rate_7d", "seats_sold"])
    with pytest.raises(FlightlineError, match=r"^it takes inputs serving does not have: seats_sold \(serving"):
        load_servable(_saved(tmp_path, LogisticRegression().fit(X, X.iloc[:, 0] > 0.5), X))


def test_a_model_that_fails_on_a_missing_value_is_refused(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _features()  # no NaN in training; serving sends NaN for a feature the store does not have
    with pytest.raises(FlightlineError, match=r"^it fails on the rows serving sends: .*NaN"):
        load_servable(_saved(tmp_path, LogisticRegression().fit(X, y), X, signature=False))


def test_an_answer_that_is_not_a_probability_is_refused(tmp_path: Path) -> None:
    X, _ = _features()
    minutes_late = pd.Series(np.linspace(20, 90, len(X)))  # a regressor of minutes, not a probability
    with pytest.raises(FlightlineError, match=r"not one probability in \[0, 1\] each"):
        load_servable(_saved(tmp_path, _booster(X, minutes_late, "regression"), X))


def test_a_model_that_does_not_answer_in_time_is_refused(tmp_path: Path) -> None:
    import mlflow

    slow = Path(__file__).parents[1] / "serving" / "slow_model.py"  # a models-from-code pyfunc that sleeps
    mlflow.pyfunc.save_model(tmp_path / "model", python_model=str(slow), model_config={"delay_s": 3})
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    with pytest.raises(FlightlineError, match=r"^it did not answer the rows serving sends in 0.5 s$"):
        probe_model(model, timeout_s=0.5)
    probe_model(model, timeout_s=10)  # the same model, given the time it takes
