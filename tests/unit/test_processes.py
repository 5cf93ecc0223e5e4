"""Pid files name one process: a pid reused by another process after a crash or restart is not ours."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flightline.processes import process_identity, read_pid, spawn, stop_pid_file


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
