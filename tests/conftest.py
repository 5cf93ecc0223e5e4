"""Test session setup: one real platform (PostgreSQL, MLflow, Airflow) in a temporary home.

The FLIGHTLINE_* and AIRFLOW__* variables are exported in ``pytest_configure``, before any test
module imports Airflow, so in-process Airflow (``dag.test()``, DagBag) and the servers the
``platform`` fixture starts agree on one metadata database. Ports are picked free, so the suite
never collides with a developer's running platform.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_PORT_SETTINGS = (
    "POSTGRES_PORT",
    "MLFLOW_PORT",
    "AIRFLOW_PORT",
    "AIRFLOW_LOG_SERVER_PORT",
    "AIRFLOW_TRIGGER_LOG_SERVER_PORT",
    "SERVE_PORT",
    "RAY_DASHBOARD_PORT",
)


def pytest_configure(config: pytest.Config) -> None:
    from flightline.platform.airflow_server import airflow_env
    from flightline.platform.config import get_settings
    from flightline.platform.processes import free_port

    home = Path(tempfile.mkdtemp(prefix="flightline-test-"))
    os.environ["FLIGHTLINE_HOME"] = str(home)
    for name in _PORT_SETTINGS:
        os.environ[f"FLIGHTLINE_{name}"] = str(free_port())
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_secrets()
    os.environ.update(airflow_env(settings))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's home (set FLIGHTLINE_KEEP_TEST_HOME=1 to keep its logs for a post-mortem).

    Also stop reporting logging errors: at exit py4j's finalizers log through handlers whose streams
    (pytest's captures) are closed, which printed a "Logging error" traceback under the summary.
    """
    import logging
    import shutil

    logging.raiseExceptions = False
    if not os.environ.get("FLIGHTLINE_KEEP_TEST_HOME"):
        shutil.rmtree(os.environ["FLIGHTLINE_HOME"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _flightline_environment_restored() -> Iterator[None]:
    """Each test starts with the session's FLIGHTLINE_* variables, and settings read from them.

    Cosmos's lineage step copies a dbt task's ``env`` into ``os.environ`` for good
    (``cosmos/operators/local.py``): harmless in an Airflow task's own process, but a DAG run in-process
    with the data tests' warehouse database left it in pytest's environment, and every later test that
    re-read the settings wrote to that database (a `serve traffic` change the router never saw).
    """
    from flightline.platform.config import get_settings

    def flightline_environment() -> dict[str, str]:
        return {name: value for name, value in os.environ.items() if name.startswith("FLIGHTLINE_")}

    before = flightline_environment()
    yield
    for name in flightline_environment().keys() - before.keys():
        del os.environ[name]
    os.environ.update(before)
    get_settings.cache_clear()  # also settings a test read from variables it had changed and put back


@pytest.fixture(scope="session")
def platform() -> Iterator[Settings]:  # noqa: F821 - the type is imported lazily
    """The running platform's settings; started once per session, stopped at its end."""
    from flightline.platform import stack
    from flightline.platform.config import get_settings

    settings = get_settings()
    try:
        stack.up(settings)
        yield settings
    finally:
        stack.down(settings)
