"""The local platform as one unit: bring every component up in order, report health, take it down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flightline.platform import airflow_server, database, mlflow_server, serve_server

if TYPE_CHECKING:
    from flightline.platform.config import Settings


@dataclass(frozen=True)
class Component:
    """One service of the platform and how to drive it."""

    name: str
    start: Callable[[Settings], bool]
    stop: Callable[[Settings], bool]
    is_healthy: Callable[[Settings], bool]
    url: Callable[[Settings], str]
    log: Callable[[Settings], Path]


COMPONENTS: tuple[Component, ...] = (
    Component(
        "postgres", database.start, database.stop, database.is_healthy,
        lambda s: f"postgresql://{s.postgres_user}@{s.postgres_host}:{s.postgres_port}/", database.log_path,
    ),
    Component(
        "mlflow", mlflow_server.start, mlflow_server.stop, mlflow_server.is_healthy,
        lambda s: s.mlflow_url, mlflow_server.log_path,
    ),
    Component(
        "airflow", airflow_server.start, airflow_server.stop, airflow_server.is_healthy,
        lambda s: s.airflow_url, airflow_server.log_path,
    ),
    Component(
        "serve", serve_server.start, serve_server.stop, serve_server.is_healthy,
        lambda s: s.serve_url, serve_server.log_path,
    ),
)


def up(settings: Settings, *, on_progress: Callable[[str, bool], None] | None = None) -> dict[str, bool]:
    """Start every component that is not running, in dependency order; idempotent.

    Returns {component: started_now}. Raises ServiceError naming the component that failed.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.ensure_secrets()
    started = {}
    for component in COMPONENTS:
        started[component.name] = component.start(settings)
        if component.name == "postgres":
            database.ensure_databases(settings)
        if on_progress:
            on_progress(component.name, started[component.name])
    return started


def down(settings: Settings) -> dict[str, bool]:
    """Stop every component, dependents first. Data stays in the home folder."""
    return {component.name: component.stop(settings) for component in reversed(COMPONENTS)}


def status(settings: Settings) -> dict[str, dict[str, object]]:
    """Health of each component: {name: {healthy, url, log}}."""
    return {
        component.name: {
            "healthy": component.is_healthy(settings),
            "url": component.url(settings),
            "log": str(component.log(settings)),
        }
        for component in COMPONENTS
    }
