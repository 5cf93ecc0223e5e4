"""The cosmos rendering of the dbt project: from a manifest that `dbt parse` writes, no database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flightline.platform.config import Settings

pytestmark = pytest.mark.slow  # dbt parse takes ~10 s


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("transform-home")
    return Settings(home=home, postgres_password="not-used", feast_offline_password="not-used")


def test_manifest_is_parsed_once_and_again_when_a_model_changes(settings: Settings) -> None:
    from flightline.data.transform import ensure_manifest

    manifest = ensure_manifest(settings)
    assert manifest.is_file() and manifest.is_relative_to(settings.home)  # never inside the repository
    written = manifest.stat().st_mtime_ns
    assert ensure_manifest(settings).stat().st_mtime_ns == written

    model = settings.dbt_project_dir / "models" / "marts" / "flights.sql"
    future = manifest.stat().st_mtime + 5
    original = model.stat()
    try:
        os.utime(model, (future, future))
        assert ensure_manifest(settings).stat().st_mtime_ns != written
    finally:
        os.utime(model, ns=(original.st_atime_ns, original.st_mtime_ns))


def test_task_group_has_a_run_and_a_test_task_per_model_in_dbt_order(settings: Settings) -> None:
    import pendulum
    from airflow.sdk import DAG

    from flightline.data.transform import build_dbt_task_group, dbt_executable, export_dbt_env

    with DAG("render_transform", schedule=None, start_date=pendulum.datetime(2013, 1, 1), catchup=False) as dag:
        build_dbt_task_group(settings, default_args={"retries": 2})

    models = ["stg_flights", "stg_weather", "stg_planes", "stg_airports", "stg_airlines", "flights",
              "weather_observations"]  # fmt: skip
    assert set(dag.task_ids) == {f"transform.{model}.{step}" for model in models for step in ("run", "test")}
    flights_run = dag.get_task("transform.flights.run")
    assert flights_run.upstream_task_ids == {"transform.stg_flights.test", "transform.stg_planes.test"}
    assert flights_run.retries == 2
    assert Path(flights_run.dbt_executable_path) == dbt_executable()
    assert export_dbt_env in flights_run.on_execute_callback
    assert "FLIGHTLINE_POSTGRES_PASSWORD" not in (flights_run.env or {})  # the secret stays out of the DAG
