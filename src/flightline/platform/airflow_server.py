"""Airflow 3: api-server, scheduler (LocalExecutor), dag-processor, triggerer and the log server.

Every process gets its configuration from :func:`airflow_env`, built from flightline's settings,
so no airflow.cfg needs editing. The scheduler and triggerer start with ``--skip-serve-logs``
because their built-in log servers bind every interface; we run one log server ourselves on
``settings.host`` instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from flightline.platform.errors import ServiceError
from flightline.platform.processes import already_running, ensure_port_free, read_pid, spawn, stop_pid_file, wait_until

if TYPE_CHECKING:
    from flightline.platform.config import Settings

COMPONENT = "airflow"
_AIRFLOW = [sys.executable, "-m", "airflow"]
PROCESSES: dict[str, list[str]] = {
    "airflow-api-server": ["api-server", "--workers", "1"],
    "airflow-scheduler": ["scheduler", "--skip-serve-logs"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer", "--skip-serve-logs"],
}
_LOG_SERVER = "airflow-log-server"


def commands(settings: Settings) -> dict[str, list[str]]:
    """Command line of each long-running Airflow process (also what a container runs)."""
    argvs = {name: [*_AIRFLOW, *args] for name, args in PROCESSES.items()}
    argvs[_LOG_SERVER] = [
        sys.executable, "-m", "uvicorn", "--factory", "airflow.utils.serve_logs.log_server:get_app",
        "--host", settings.host, "--port", str(settings.airflow_log_server_port), "--no-access-log",
    ]
    return argvs


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for every Airflow process and for in-process Airflow use (tests, dag.test())."""
    home = settings.airflow_home
    return {
        **settings.as_env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.plugins_dir),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__FERNET_KEY": settings.secret("airflow_fernet_key"),
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_admin_user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.postgres_url(settings.airflow_db, driver="postgresql+psycopg2"),
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": settings.airflow_url,
        "AIRFLOW__API__SECRET_KEY": settings.secret("airflow_api_secret_key"),
        "AIRFLOW__API_AUTH__JWT_SECRET": settings.secret("airflow_jwt_secret"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.airflow_log_server_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.airflow_trigger_log_server_port),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__COSMOS__CACHE_DIR": str(settings.home / "cosmos-cache"),
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_TRACKING_URI": settings.mlflow_url,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # tqdm bars, a line per file, in every task log
        "NO_PROXY": "*",
    }


def passwords_file(settings: Settings) -> Path:
    return settings.airflow_home / "simple_auth_manager_passwords.json"


def log_path(settings: Settings, process: str = "airflow-api-server") -> Path:
    return settings.logs_dir / f"{process}.log"


def health(settings: Settings) -> dict[str, str]:
    """Status of each Airflow part from the api-server's health endpoint ({} when it is down)."""
    try:
        response = httpx.get(f"{settings.airflow_url}/api/v2/monitor/health", timeout=3)
        response.raise_for_status()
    except httpx.HTTPError:
        return {}
    return {part: info.get("status", "unknown") for part, info in response.json().items() if isinstance(info, dict)}


def is_healthy(settings: Settings) -> bool:
    parts = health(settings)
    wanted = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return bool(parts) and all(parts.get(part) == "healthy" for part in wanted) and _processes_up(settings)


def _processes_up(settings: Settings) -> bool:
    """Each process runs: Airflow's health reports a dead scheduler only once its heartbeat is stale."""
    return all(read_pid(settings.run_dir / f"{name}.pid") is not None for name in [*PROCESSES, _LOG_SERVER])


def migrate(settings: Settings, env: dict[str, str]) -> None:
    """Create or upgrade Airflow's metadata schema (idempotent)."""
    import subprocess

    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = log_path(settings, "airflow-db-migrate")
    with open(log, "a") as handle:
        result = subprocess.run([*_AIRFLOW, "db", "migrate"], env=env, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise ServiceError(COMPONENT, f"`airflow db migrate` exited with {result.returncode}", log=log)


def write_passwords_file(settings: Settings) -> None:
    """The simple auth manager's user file, from the generated admin password."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    passwords_file(settings).write_text(
        json.dumps({settings.airflow_admin_user: settings.secret("airflow_admin_password")})
    )
    os.chmod(passwords_file(settings), 0o600)


def start(settings: Settings) -> bool:
    """Migrate the metadata database and start every Airflow process that is not running."""

    def pids() -> dict[str, int | None]:
        return {name: read_pid(settings.run_dir / f"{name}.pid") for name in [*PROCESSES, _LOG_SERVER]}

    if already_running(COMPONENT, lambda: all(pids().values()), lambda: is_healthy(settings),
                       timeout=settings.startup_timeout_s, log=log_path(settings),
                       pid_files=[settings.run_dir / f"{name}.pid" for name in [*PROCESSES, _LOG_SERVER]]):
        return False
    running = pids()
    write_passwords_file(settings)
    env = {**os.environ, **airflow_env(settings)}
    if running["airflow-api-server"] is None:
        ensure_port_free(COMPONENT, settings.host, settings.airflow_port, log=log_path(settings))
    if running[_LOG_SERVER] is None:
        ensure_port_free(COMPONENT, settings.host, settings.airflow_log_server_port,
                         log=log_path(settings, _LOG_SERVER))
    migrate(settings, env)
    for name, argv in commands(settings).items():
        if running[name] is None:
            spawn(name, argv, run_dir=settings.run_dir, log_dir=settings.logs_dir, env=env)
    def started() -> bool:
        for name in [*PROCESSES, _LOG_SERVER]:
            if read_pid(settings.run_dir / f"{name}.pid") is None:
                raise ServiceError(name, "process exited during startup", log=log_path(settings, name))
        return is_healthy(settings)

    wait_until(COMPONENT, started, timeout=settings.startup_timeout_s, log=log_path(settings))
    return True


def stop(settings: Settings) -> bool:
    stopped = False
    for name in [_LOG_SERVER, "airflow-triggerer", "airflow-dag-processor", "airflow-scheduler", "airflow-api-server"]:
        stopped |= stop_pid_file(settings.run_dir / f"{name}.pid")
    return stopped


def api_token(settings: Settings) -> str:
    """A JWT for Airflow's REST API, from the admin credentials the setup wrote."""
    response = httpx.post(
        f"{settings.airflow_url}/auth/token",
        json={"username": settings.airflow_admin_user, "password": settings.secret("airflow_admin_password")},
        timeout=10,
    )
    if response.status_code >= 400:
        raise ServiceError(COMPONENT, f"token request failed: HTTP {response.status_code} {response.text[:200]}")
    return str(response.json()["access_token"])
