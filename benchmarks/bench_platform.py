"""Time `flightline up` from nothing to healthy in a fresh home, and the memory the platform holds.

Prints JSON: seconds to healthy, and proportional set size (PSS, so shared pages count once)
per component and in total. Run: .venv/bin/python benchmarks/bench_platform.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flightline.platform.processes import free_port, process_tree, read_pid


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="flightline-bench-"))
    env = {**os.environ, "FLIGHTLINE_HOME": str(home)}
    for name in ("POSTGRES_PORT", "MLFLOW_PORT", "AIRFLOW_PORT", "AIRFLOW_LOG_SERVER_PORT",
                 "AIRFLOW_TRIGGER_LOG_SERVER_PORT"):
        env[f"FLIGHTLINE_{name}"] = str(free_port())
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "flightline", "up"], env=env, check=True, capture_output=True)
    seconds_to_healthy = time.monotonic() - began
    time.sleep(10)  # let the processes settle after their start-up peaks
    memory: dict[str, float] = {}
    for pid_file in sorted((home / "run").glob("*.pid")):
        pid = read_pid(pid_file)
        memory[pid_file.stem] = sum(_pss_kib(p) for p in process_tree(pid)) / 1024 if pid else 0.0
    postmaster = int((home / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    memory["postgres"] = sum(_pss_kib(p) for p in process_tree(postmaster)) / 1024
    subprocess.run([sys.executable, "-m", "flightline", "down"], env=env, check=True, capture_output=True)
    print(json.dumps({
        "seconds_to_healthy_fresh_home": round(seconds_to_healthy, 1),
        "memory_pss_mib": {name: round(mib) for name, mib in memory.items()},
        "memory_pss_mib_total": round(sum(memory.values())),
    }, indent=2))


if __name__ == "__main__":
    main()
