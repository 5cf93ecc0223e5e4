"""Start, watch and stop the platform's background processes.

Each process writes its pid to ``<home>/run/<name>.pid`` and its output to
``<home>/logs/<name>.log``, so that a later ``flightline down`` or ``status`` in another shell finds it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from flightline.platform.errors import PortInUseError, ServiceError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive_file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing): processes that build the same files (an
    exported graph, a converted model) wait, and the first one's result is what the others find."""
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def port_is_open(host: str, port: int, *, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it), for a server started next."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def process_tree(root: int) -> list[int]:
    """root and every process below it, from one pass over /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return sorted(tree)


def command_line(pid: int) -> str:
    """A process's command line, arguments joined by spaces ("" once it is gone); Ray workers put their
    actor's title here (``ray::ServeReplica:<app>:<deployment>``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_identity(pid: int) -> str | None:
    """The boot and the start time (clock ticks after boot) of process pid: a pid is reused, after the
    process ends or the machine restarts, these two are not. None where /proc cannot tell."""
    try:
        boot = _boot_id()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{boot}/{stat.rsplit(') ', 1)[1].split()[19]}"  # field 22 of stat: starttime


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def read_pid(pid_file: Path) -> int | None:
    """The pid recorded in pid_file if that very process still runs, else None.

    A pid file outlives its process (a crash, a restart of the machine or container); its pid may then
    name another process, which ``up`` would wait on and ``down`` would kill. The file records the
    process's identity beside its pid, and a pid whose process has another identity is not ours. (A
    file from before identities were recorded holds the pid alone and is trusted as before.)
    """
    try:
        pid_text, _, identity = pid_file.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if not pid_alive(pid) or (identity and process_identity(pid) != identity):
        return None
    return pid


def stop_leftovers(pid_file: Path, *, timeout: float = 10.0, after_stop: bool = False) -> bool:
    """Stop what a recorded process that died left running in its session; True when there was some.
    ``after_stop``: the process was just stopped, and a straggler is no news (Ray's head exits before all
    of its processes have).

    Each component leads its own session (``spawn``), and its children stay in it: a scheduler killed by
    the OOM killer or ``kill -9`` left its executor workers (~140 MB each) running, orphaned, through
    ``up`` and ``down``; a Ray head its agents and HAProxy, which kept the serving port. A pid is not
    reused while a session of that id has a member, so when the leader is gone (this boot) any member
    left is its own.
    """
    try:
        pid_text, _, identity = pid_file.read_text().strip().partition(" ")
        pid = int(pid_text)
        same_boot = identity.partition("/")[0] == _boot_id()
    except (OSError, ValueError):
        return False
    if not same_boot or pid_alive(pid) or not (members := _session_members(pid)):
        return False
    log.log(logging.DEBUG if after_stop else logging.WARNING, "%s: stopping what pid %d left running (%d processes)",
            pid_file.stem, pid, len(members))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for member in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, sig)
        deadline = time.monotonic() + timeout
        while (members := _session_members(pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not members:
            break
    return True


def _session_members(sid: int) -> list[int]:
    """Live processes of a session. Zombies do not count: where pid 1 does not reap orphans (some
    containers), a killed process stays one."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, _, session = stat.read_text().rpartition(") ")[2].split()[:4]
        except (OSError, ValueError):
            continue
        if int(session) == sid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    run_dir: Path,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start argv detached in its own session, logging to ``<log_dir>/<name>.log``; return its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    (run_dir / f"{name}.pid").write_text(f"{process.pid} {process_identity(process.pid) or ''}".strip())
    return process.pid


def stop_pid_file(pid_file: Path, *, timeout: float = 30.0) -> bool:
    """Stop the process group recorded in pid_file: SIGTERM, then SIGKILL after timeout.

    Returns True when a running process, or what a dead one left in its session, was stopped.
    """
    pid = read_pid(pid_file)
    if pid is not None:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.2)
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.5)
        # children of the group (workers) may outlive the leader briefly
        _signal_group(pid, signal.SIGKILL)
    leftovers = stop_leftovers(pid_file, after_stop=pid is not None)  # its session's other groups, or all of it
    pid_file.unlink(missing_ok=True)
    return pid is not None or leftovers


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def ensure_port_free(component: str, host: str, port: int, *, log: Path | None = None) -> None:
    """Raise PortInUseError naming the component when host:port is already taken."""
    if port_is_open(host, port):
        raise PortInUseError(
            component,
            f"port {host}:{port} is already in use by another process; stop it or set "
            f"FLIGHTLINE_{component.upper()}_PORT to a free port",
            log=log,
        )


def already_running(
    component: str, running: Callable[[], bool], is_healthy: Callable[[], bool], *, timeout: float,
    log: Path | None = None, pid_files: Sequence[Path] = (),
) -> bool:
    """True when the component's process runs and is (or turns) healthy: then ``up`` leaves it alone.

    A health probe that times out on a busy machine does not mean the process is gone; treating it so would
    start a second copy onto the same port, or migrate and re-deploy for nothing. So while the process
    runs, the probe is retried; False once it is not running (start it), ServiceError naming its log if it
    runs but stays unhealthy for ``timeout``. Before it answers False, what the dead processes of
    ``pid_files`` left in their sessions is stopped: a killed MLflow's uvicorn worker still held its port.
    """
    if running():
        wait_until(component, lambda: is_healthy() or not running(), timeout=timeout, log=log, interval=2)
        if running():
            return True
    for pid_file in pid_files:
        stop_leftovers(pid_file)
    return False


def wait_until(
    component: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    pid_file: Path | None = None,
    log: Path | None = None,
    interval: float = 1.0,
) -> None:
    """Poll check() until it is true; fail early if the component's process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid_file is not None and read_pid(pid_file) is None:
            raise ServiceError(component, "process exited during startup", log=log)
        time.sleep(interval)
    raise ServiceError(component, f"not healthy after {timeout:.0f} s", log=log)
