"""The MLflow tracking and registry server: Postgres backend, artifacts proxied to a local root."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from flightline.platform.processes import already_running, ensure_port_free, read_pid, spawn, stop_pid_file, wait_until

if TYPE_CHECKING:
    from flightline.platform.config import Settings

COMPONENT = "mlflow"


def log_path(settings: Settings) -> Path:
    return settings.logs_dir / "mlflow.log"


def _pid_file(settings: Settings) -> Path:
    return settings.run_dir / "mlflow.pid"


def is_healthy(settings: Settings) -> bool:
    try:
        return httpx.get(f"{settings.mlflow_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The server's command line and extra environment (also what a container runs)."""
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", settings.postgres_url(settings.mlflow_db),
        "--artifacts-destination", str(settings.artifact_root),
        "--serve-artifacts",
        "--host", settings.host,
        "--port", str(settings.mlflow_port),
        "--workers", "1",
    ]
    if settings.mlflow_allowed_hosts:
        argv += ["--allowed-hosts", settings.mlflow_allowed_hosts]
    # the job-execution worker doubles the server's memory and we schedule jobs with Airflow
    return argv, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def start(settings: Settings) -> bool:
    """Start the server unless it already runs; return True when it was started."""
    log = log_path(settings)
    if already_running(COMPONENT, lambda: read_pid(_pid_file(settings)) is not None, lambda: is_healthy(settings),
                       timeout=settings.startup_timeout_s, log=log, pid_files=[_pid_file(settings)]):
        return False
    ensure_port_free(COMPONENT, settings.host, settings.mlflow_port, log=log)
    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    argv, env = command(settings)
    spawn(COMPONENT, argv, run_dir=settings.run_dir, log_dir=settings.logs_dir, env={**os.environ, **env})
    wait_until(COMPONENT, lambda: is_healthy(settings), timeout=settings.startup_timeout_s,
               pid_file=_pid_file(settings), log=log)
    return True


def stop(settings: Settings) -> bool:
    return stop_pid_file(_pid_file(settings))
