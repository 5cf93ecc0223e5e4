"""The foundation end to end: real PostgreSQL, MLflow and Airflow processes, no mocks."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable

import httpx
import psycopg
import pytest

from flightline.platform import database, stack
from flightline.platform.airflow_client import AirflowClient
from flightline.platform.airflow_server import api_token

pytestmark = pytest.mark.integration


def flightline_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flightline", *args],
        capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy(),
    )


def test_status_json_lists_every_component_healthy(platform) -> None:
    result = flightline_cli("status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"postgres", "mlflow", "airflow"} <= set(report)
    for name, item in report.items():
        assert item["healthy"] is True, name
        assert item["url"] and item["log"].endswith(".log")
    assert report["airflow"]["url"] == platform.airflow_url


def test_second_up_is_a_noop(platform) -> None:
    pids = {p.name: p.read_text() for p in platform.run_dir.glob("*.pid")}
    result = flightline_cli("up")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already running") == len(stack.COMPONENTS)
    assert {p.name: p.read_text() for p in platform.run_dir.glob("*.pid")} == pids


def _listeners() -> list[tuple[str, str]]:
    """(local address, owning process) of every listening TCP socket."""
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [(line.split()[3], line.split(maxsplit=5)[-1]) for line in listening.splitlines()]


def test_up_waits_for_a_busy_component_instead_of_starting_it_again(platform) -> None:
    """MLflow and Serve's ingress stopped (SIGSTOP) for a while, as a busy machine can stall them: their
    health probes time out, yet `up` waits for them to answer, starts nothing and says they run."""
    from flightline.platform.processes import read_pid

    mlflow_group = read_pid(platform.run_dir / "mlflow.pid")
    assert mlflow_group is not None
    haproxy = [int(pid) for address, owner in _listeners() if address == f"127.0.0.1:{platform.serve_port}"
               for pid in re.findall(r"pid=(\d+)", owner)]
    assert haproxy
    pids = {p.name: p.read_text() for p in platform.run_dir.glob("*.pid")}

    def resume(kill: Callable[[int, int], None], targets: list[int]) -> None:
        for target in targets:
            with contextlib.suppress(ProcessLookupError):
                kill(target, signal.SIGCONT)

    timers = [threading.Timer(10, resume, (os.killpg, [mlflow_group])),  # mlflow is probed second, serve last
              threading.Timer(25, resume, (os.kill, haproxy))]
    os.killpg(mlflow_group, signal.SIGSTOP)
    for pid in haproxy:
        os.kill(pid, signal.SIGSTOP)
    try:
        for timer in timers:
            timer.start()
        result = flightline_cli("up")
    finally:
        for timer in timers:
            timer.cancel()
        resume(os.killpg, [mlflow_group])
        resume(os.kill, haproxy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("already running") == len(stack.COMPONENTS), result.stdout
    assert {p.name: p.read_text() for p in platform.run_dir.glob("*.pid")} == pids


def test_every_listener_binds_loopback_only(platform) -> None:
    """The platform's own ports, Serve's ingress and each router replica's HTTP port (HAProxy's backends)."""
    ports = [platform.postgres_port, platform.mlflow_port, platform.airflow_port, platform.airflow_log_server_port,
             platform.serve_port]
    listeners = _listeners()
    for port in ports:
        local_addresses = [address for address, _ in listeners if address.endswith(f":{port}")]
        assert local_addresses == [f"127.0.0.1:{port}"], (port, local_addresses)
    replica_addresses = [address for address, owner in listeners
                         if "ServeRepli" in owner and 30000 <= int(address.rpartition(":")[2]) <= 31000]
    assert replica_addresses, listeners  # Serve's direct-ingress port range: the router replicas' HTTP servers
    assert all(address.startswith("127.0.0.1:") for address in replica_addresses), replica_addresses


def test_serve_ingress_is_haproxy_forwarding_to_the_router(platform) -> None:
    """serve_port is HAProxy (not Serve's Python proxy), and what it answers comes from the router app."""
    owners = [owner for address, owner in _listeners() if address == f"127.0.0.1:{platform.serve_port}"]
    assert len(owners) == 1 and '"haproxy"' in owners[0], owners
    response = httpx.post(f"{platform.serve_url}/v1/predict/flight-delay", json={"carrier": "UA"}, timeout=30)
    assert response.status_code == 422, response.text  # the router's own validation, through HAProxy
    assert httpx.get(f"{platform.serve_url}/docs", timeout=30).status_code == 200


def test_vector_extension_and_hnsw_index(platform) -> None:
    with database.connect(platform, platform.warehouse_db) as conn:
        conn.execute("create temporary table items (id int primary key, embedding vector(3))")
        conn.execute(
            "insert into items select i, array[cos(i), sin(i), i % 7]::vector from generate_series(1, 500) i"
        )
        conn.execute("create index on items using hnsw (embedding vector_cosine_ops)")
        conn.execute("set enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute(
            "explain select id from items order by embedding <=> '[1,0,1]' limit 5"
        ))
        nearest = conn.execute("select id from items order by embedding <=> %s::vector limit 1",
                               ("[0.5403,0.8415,1]",)).fetchone()
    assert "items_embedding_idx" in plan
    assert nearest == (1,)


def test_feast_offline_role_plans_without_nested_loops_in_the_warehouse_only(platform) -> None:
    def nestloop(database_name: str) -> str:
        with psycopg.connect(
            host=platform.postgres_host, port=platform.postgres_port, dbname=database_name,
            user=platform.feast_offline_user, password=platform.secret("feast_offline_password"),
        ) as conn:
            return conn.execute("show enable_nestloop").fetchone()[0]

    database.ensure_databases(platform)  # a second run is a no-op, not an error
    assert nestloop(platform.warehouse_db) == "off"
    assert nestloop(platform.feast_db) == "on"
    with database.connect(platform, platform.warehouse_db) as conn:
        assert conn.execute("show enable_nestloop").fetchone()[0] == "on"  # the platform's own login is untouched


def test_airflow_rest_api_requires_a_token(platform) -> None:
    url = f"{platform.airflow_url}/api/v2/dags"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=10).status_code in (401, 403)
    response = httpx.get(url, headers={"Authorization": f"Bearer {api_token(platform)}"}, timeout=10)
    assert response.status_code == 200
    assert "dags" in response.json()


def test_wrong_password_gets_no_token(platform) -> None:
    response = httpx.post(f"{platform.airflow_url}/auth/token",
                          json={"username": platform.airflow_admin_user, "password": "wrong"}, timeout=10)
    assert response.status_code in (401, 403)


def test_triggered_dag_runs_to_success_under_the_scheduler(platform) -> None:
    client = AirflowClient(platform)
    run_id = client.trigger("platform_smoke")
    assert client.wait("platform_smoke", run_id, timeout=240) == "success"
    assert client.task_states("platform_smoke", run_id) == {"check_stores": "success"}


def _register_model(platform, name: str) -> str:
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(platform.mlflow_url)
    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1]))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name,
            pip_requirements=["scikit-learn"], input_example=np.array([[1.5]]),
        )
    client = MlflowClient(platform.mlflow_url)
    client.set_registered_model_alias(name, "champion", info.registered_model_version)
    return str(info.registered_model_version)


def test_mlflow_registers_a_version_under_an_alias(platform) -> None:
    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    name = f"smoke-{uuid.uuid4().hex[:8]}"
    version = _register_model(platform, name)
    client = MlflowClient(platform.mlflow_url)
    assert client.get_model_version_by_alias(name, "champion").version == version
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert list(loaded.predict(np.array([[3.0]]))) == [1]


def test_registry_tells_a_missing_model_from_a_server_that_does_not_answer(platform) -> None:
    """Every MLflow error used to read as "not found": with the server down, `flightline models list` said
    "no registered model" after ~4 minutes of MLflow's retries, and alias lookups said "no champion"."""
    from flightline.models import registry
    from flightline.platform.errors import NotFoundError, ServiceError
    from flightline.platform.processes import free_port

    missing = platform.model_copy(update={"model_name": f"nosuch-{uuid.uuid4().hex[:8]}"})
    down = platform.model_copy(update={"mlflow_port": free_port(), "mlflow_tracking_uri": None})
    try:
        with pytest.raises(NotFoundError, match="no registered model"):
            registry.list_versions(missing)
        assert registry.alias_version(missing, registry.CHAMPION) is None
        with pytest.raises(ServiceError, match="mlflow: the registry did not answer"):
            registry.list_versions(down)
        with pytest.raises(ServiceError, match="mlflow: the registry did not answer"):
            registry.alias_version(down, registry.CHAMPION)
    finally:
        registry.client(platform)  # the process's default tracking URI back on the live server


def test_busy_port_names_the_component_and_its_log(tmp_path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**os.environ, "FLIGHTLINE_HOME": str(tmp_path / "home"), "FLIGHTLINE_POSTGRES_PORT": str(port)}
        result = flightline_cli("up", env=env, timeout=120)
    assert result.returncode == 1
    assert "postgres" in result.stderr and str(port) in result.stderr
    assert str(tmp_path / "home" / "logs" / "postgres.log") in result.stderr
    assert "Traceback" not in result.stderr


def test_a_killed_scheduler_is_reported_at_once_and_up_restarts_it_without_its_orphans(platform) -> None:
    """kill -9 (or the OOM killer) on the scheduler: Airflow's own health noticed only once the heartbeat was
    30 s old, and its LocalExecutor workers ran on, orphaned, through `up` and `down`."""
    import time

    from flightline.platform.processes import pid_alive, process_tree, read_pid

    scheduler = read_pid(platform.run_dir / "airflow-scheduler.pid")
    assert scheduler is not None
    workers = process_tree(scheduler)[1:]
    assert workers, "LocalExecutor's workers"
    os.kill(scheduler, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(scheduler) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = json.loads(flightline_cli("status", "--json").stdout)
    assert {name for name, item in status.items() if not item["healthy"]} == {"airflow"}, status

    up = flightline_cli("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "left running" in up.stderr
    assert not any(pid_alive(worker) for worker in workers)
    assert read_pid(platform.run_dir / "airflow-scheduler.pid") not in (None, scheduler)
    assert json.loads(flightline_cli("status", "--json").stdout)["airflow"]["healthy"]


def test_down_then_up_keeps_data(platform) -> None:
    """Runs last in this module: it restarts the shared platform and leaves it up."""
    name = f"persist-{uuid.uuid4().hex[:8]}"
    version = _register_model(platform, name)
    with database.connect(platform, platform.warehouse_db) as conn:
        conn.execute("create table if not exists restart_probe (token text)")
        conn.execute("insert into restart_probe values (%s)", (name,))

    pid_files = sorted(platform.run_dir.glob("*.pid"))
    down = flightline_cli("down")
    assert down.returncode == 0, down.stderr
    status = flightline_cli("status", "--json")
    assert status.returncode == 1
    assert not any(item["healthy"] for item in json.loads(status.stdout).values())

    # what a crash or a restart of the machine leaves: the pid files, whose pids name other processes by then.
    # `up` waited on such a process until its timeout and failed (PostgreSQL refused its lock file), and
    # `down` would have killed it
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        for pid_file in pid_files:
            pid_file.write_text(f"{bystander.pid} 00000000-0000-0000-0000-000000000000/1")
        (platform.pgdata_dir / "postmaster.pid").write_text(f"{bystander.pid}\n{platform.pgdata_dir}\n")
        up = flightline_cli("up")
        assert up.returncode == 0, up.stderr
        assert bystander.poll() is None
    finally:
        bystander.kill()
    from mlflow import MlflowClient

    assert MlflowClient(platform.mlflow_url).get_model_version_by_alias(name, "champion").version == version
    with database.connect(platform, platform.warehouse_db) as conn:
        assert conn.execute("select count(*) from restart_probe where token = %s", (name,)).fetchone() == (1,)
