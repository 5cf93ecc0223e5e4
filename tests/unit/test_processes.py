"""Pid files name one process: a pid reused by another process after a crash or restart is not ours."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from flightline.platform.processes import (
    already_running,
    command_line,
    pid_alive,
    process_identity,
    process_tree,
    read_pid,
    spawn,
    stop_pid_file,
)


def test_a_pid_file_whose_pid_another_process_took_is_stale_and_that_process_is_left_alone(tmp_path: Path) -> None:
    ours = spawn("worker", ["sleep", "60"], run_dir=tmp_path, log_dir=tmp_path)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert read_pid(tmp_path / "worker.pid") == ours
        assert (tmp_path / "worker.pid").read_text() == f"{ours} {process_identity(ours)}"
        # the file a restart leaves behind: its pid is now the bystander's, started in another boot
        stale = tmp_path / "stale.pid"
        stale.write_text(f"{bystander.pid} 00000000-0000-0000-0000-000000000000/1")
        assert read_pid(stale) is None
        assert stop_pid_file(stale) is False and not stale.exists()
        assert bystander.poll() is None
        assert stop_pid_file(tmp_path / "worker.pid") is True and read_pid(tmp_path / "worker.pid") is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_postmaster_pid_naming_another_program_is_removed_and_one_naming_a_postgres_is_kept(tmp_path: Path) -> None:
    """PostgreSQL refuses to start on a lock file whose pid is alive; a running server whose lock file goes
    shuts down, so only a pid that runs another program makes the file stale."""
    from flightline.platform import database
    from flightline.platform.config import Settings

    settings = Settings(home=tmp_path)
    settings.pgdata_dir.mkdir(parents=True)
    lock = settings.pgdata_dir / "postmaster.pid"
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    postgres_like = subprocess.Popen(["bash", "-c", "exec -a postgres sleep 60"], start_new_session=True)
    try:
        lock.write_text(f"{bystander.pid}\n{settings.pgdata_dir}\n")
        assert database._server_pid(settings) is None and not lock.exists()
        assert bystander.poll() is None
        for _ in range(50):  # until bash has exec'd: its command line is then "postgres 60"
            if command_line(postgres_like.pid).startswith("postgres "):
                break
            time.sleep(0.02)
        lock.write_text(f"{postgres_like.pid}\n/elsewhere/pgdata\n")
        assert database._server_pid(settings) == postgres_like.pid and lock.exists()
    finally:
        for process in (bystander, postgres_like):
            process.kill()
            process.wait()


def test_what_a_killed_leader_left_in_its_group_is_stopped_by_down_and_before_up_restarts_it(tmp_path: Path) -> None:
    """A scheduler killed with -9 (or by the OOM killer) leaves its executor workers running, orphaned."""

    def killed_leader_with_workers() -> list[int]:
        leader = spawn("scheduler", ["bash", "-c", "sleep 300 & sleep 300 & wait"], run_dir=tmp_path, log_dir=tmp_path)
        deadline = time.monotonic() + 10
        while len(workers := process_tree(leader)[1:]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(leader, signal.SIGKILL)
        os.waitpid(leader, 0)  # reaped, as init does once the CLI that started it has exited
        assert len(workers) == 2 and all(pid_alive(w) for w in workers)
        return workers

    orphans = killed_leader_with_workers()
    assert read_pid(tmp_path / "scheduler.pid") is None
    assert stop_pid_file(tmp_path / "scheduler.pid") is True  # `down`
    assert not any(pid_alive(w) for w in orphans) and not (tmp_path / "scheduler.pid").exists()

    orphans = killed_leader_with_workers()  # `up` asks whether it runs before starting it
    pid_file = tmp_path / "scheduler.pid"
    assert not already_running("scheduler", lambda: read_pid(pid_file) is not None, lambda: True, timeout=5,
                               pid_files=[pid_file])
    assert not any(pid_alive(w) for w in orphans)
