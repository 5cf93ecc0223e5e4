"""Bronze -> raw -> dbt marts on the real PostgreSQL: contents, idempotent reruns, dbt tests passing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from flightline.data import lake
from flightline.platform.config import Settings

pytestmark = pytest.mark.integration

FEB = dt.date(2013, 2, 1)

_MARTS_CHECKSUM = """
select
    (select md5(string_agg(f::text, '|' order by flight_id)) from marts.flights f),
    (select md5(string_agg(w::text, '|' order by weather_observation_id)) from marts.weather_observations w)
"""


@pytest.fixture(scope="module")
def built(data_settings: Settings) -> dict[str, object]:
    """February's batch extracted, loaded into raw and built by dbt once for the module."""
    from flightline.data.transform import run_dbt_build
    from flightline.data.warehouse import load_raw

    versions = lake.extract(data_settings, run_month=FEB)
    counts = load_raw(data_settings, versions)
    return {"versions": versions, "counts": counts, "build": run_dbt_build(data_settings)}


def test_load_raw_copies_the_exact_versions_and_a_rerun_changes_nothing(
    data_settings: Settings, built: dict[str, object]
) -> None:
    from flightline.data.warehouse import load_raw, loaded_versions
    from flightline.platform.database import connect

    assert built["counts"] == {"flights": 51955, "weather": 4236, "planes": 3322, "airports": 1458, "airlines": 16}
    assert loaded_versions(data_settings) == built["versions"]
    with connect(data_settings, data_settings.warehouse_db) as conn:
        loads = conn.execute("select count(*) from raw._load_log").fetchone()
        assert load_raw(data_settings, built["versions"]) == built["counts"]  # type: ignore[arg-type]
        assert conn.execute("select count(*) from raw._load_log").fetchone() == loads


def test_dbt_build_passes_and_marts_keep_the_contract(data_settings: Settings, built: dict[str, object]) -> None:
    from flightline.platform.database import connect

    build = built["build"]
    assert build["success"] and build["counts"].get("error", 0) == 0 and build["counts"].get("fail", 0) == 0  # type: ignore[index]
    with connect(data_settings, data_settings.warehouse_db) as conn:
        row = conn.execute(
            "select count(*), count(distinct flight_id), max(scheduled_departure_at), min(month), max(month),"
            " bool_and(outcome_known_at >= scheduled_departure_at), count(*) filter (where is_delayed is null),"
            " pg_typeof(min(scheduled_departure_at))::text from marts.flights"
        ).fetchone()
        assert row is not None
        rows, distinct, latest, first_month, last_month, outcome_after_schedule, unlabelled, ts_type = row
        assert rows == distinct == 51955
        assert latest < lake.month_end_utc(FEB)
        assert (first_month, last_month) == (1, 2)
        assert outcome_after_schedule and unlabelled == 0
        assert ts_type == "timestamp with time zone"
        flight = conn.execute(
            "select scheduled_departure_at, scheduled_departure_hour_local, day_of_week, route_code, is_delayed"
            " from marts.flights where flight_id = 'UA1545-EWR-201301010515'"
        ).fetchone()
        assert flight == (dt.datetime(2013, 1, 1, 10, 15, tzinfo=dt.UTC), 5, 2, "EWR-IAH", False)
        weather = conn.execute(
            "select count(*), count(distinct (origin_airport_code, observed_at)) from marts.weather_observations"
        ).fetchone()
        assert weather is not None and weather[0] == weather[1] == 4236


def test_rebuilding_the_same_data_changes_no_row(data_settings: Settings, built: dict[str, object]) -> None:
    from flightline.data.transform import run_dbt_build
    from flightline.data.warehouse import load_raw
    from flightline.platform.database import connect

    with connect(data_settings, data_settings.warehouse_db) as conn:
        before = conn.execute(_MARTS_CHECKSUM).fetchone()
    load_raw(data_settings, lake.extract(data_settings, run_month=FEB))
    run_dbt_build(data_settings)
    with connect(data_settings, data_settings.warehouse_db) as conn:
        assert conn.execute(_MARTS_CHECKSUM).fetchone() == before


def test_cosmos_renders_and_runs_the_project_in_airflow(
    data_settings: Settings, built: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG's transform stage: each model and its tests are tasks, and they run under Airflow.

    ``dag.test()`` runs only DAGs it finds in a bundle, so the DAG file goes into a bundle of its own.
    """
    import importlib.util

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "settings.json").write_text(data_settings.model_dump_json())
    (bundle / "test_cosmos_transform.py").write_text(_COSMOS_DAG)
    bundles = [
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
        {
            "name": "data-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(bundle), "refresh_interval": 0},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    spec = importlib.util.spec_from_file_location("test_cosmos_transform", bundle / "test_cosmos_transform.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag

    assert set(dag.task_ids) == {
        "transform.stg_weather.run", "transform.stg_weather.test",
        "transform.weather_observations.run", "transform.weather_observations.test",
    }  # fmt: skip
    assert dag.get_task("transform.weather_observations.run").upstream_task_ids == {"transform.stg_weather.test"}

    run = dag.test()

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, states


_COSMOS_DAG = """
import json
from pathlib import Path

import pendulum
from airflow.sdk import DAG

from flightline.platform.config import Settings
from flightline.data.transform import build_dbt_task_group

settings = Settings(**json.loads((Path(__file__).parent / "settings.json").read_text()))
with DAG("test_cosmos_transform", schedule=None, start_date=pendulum.datetime(2013, 1, 1), catchup=False) as dag:
    build_dbt_task_group(
        settings,
        select=["+weather_observations"],
        operator_args={"env": {"FLIGHTLINE_WAREHOUSE_DB": settings.warehouse_db}},
    )
"""
