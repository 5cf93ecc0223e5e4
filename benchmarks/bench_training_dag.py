"""Time the flight_delay_training DAG on all of 2013 under the real scheduler; print JSON.

Trains on Jan-Sep and evaluates on Oct-Dec (out of time) through the REST API of the running
platform (`flightline up` first), then reads each task's start and end from Airflow and the
holdout metrics from MLflow. Per stage: wall time from the first task's start to the last task's
end. Results also go to benchmarks/results/training_dag.json.

    python benchmarks/bench_training_dag.py [--timeout 1800]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import httpx

from flightline.models.training import HOLDOUT_PARAMS, manual_logical_date
from flightline.platform.airflow_client import AirflowClient
from flightline.platform.airflow_server import api_token
from flightline.platform.config import get_settings

DAG_ID = "flight_delay_training"
STAGES = ("extract", "validate", "transform", "featurize", "training_set", "train", "evaluate", "register")


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    settings = get_settings()
    client = AirflowClient(settings)
    http = httpx.Client(headers={"Authorization": f"Bearer {api_token(settings)}"}, timeout=30)
    began = time.monotonic()
    run_id = client.trigger(DAG_ID, conf=HOLDOUT_PARAMS, logical_date=manual_logical_date().isoformat())
    state = client.wait(DAG_ID, run_id, timeout=args.timeout, poll_s=5)
    wall = time.monotonic() - began

    base = f"{settings.airflow_url}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"
    tasks = http.get(f"{base}/taskInstances", params={"limit": 1000}).json()["task_instances"]
    stages: dict[str, dict[str, float | int]] = {}
    for stage in STAGES:
        mine = [t for t in tasks if t["task_id"].split(".")[0] == stage and t["start_date"] and t["end_date"]]
        if mine:
            start = min(_parse(t["start_date"]) for t in mine)  # type: ignore[type-var]
            end = max(_parse(t["end_date"]) for t in mine)  # type: ignore[type-var]
            stages[stage] = {
                "seconds": round((end - start).total_seconds(), 1),
                "tasks": len(mine),
                "task_seconds": round(sum(t["duration"] or 0 for t in mine), 1),
            }
    run = http.get(base).json()
    total = (_parse(run["end_date"]) - _parse(run["start_date"])).total_seconds() if run.get("end_date") else None

    holdout: dict[str, float] = {}
    try:
        from flightline.models import registry

        version = registry.alias_version(settings, registry.CHALLENGER)
        if version is not None:
            metrics = registry.client(settings).get_run(version.run_id).data.metrics
            holdout = {k.removeprefix("eval_"): round(v, 4) for k, v in metrics.items() if k.startswith("eval_")}
            holdout["model_version"] = int(version.version)
    except Exception as exc:  # noqa: BLE001 - the timing is still worth printing
        holdout = {"error": str(exc)}  # type: ignore[dict-item]

    result = {
        "benchmark": "training_dag",
        "dag_id": DAG_ID,
        "run_id": run_id,
        "state": state,
        "conf": HOLDOUT_PARAMS,
        "dag_run_seconds": round(total, 1) if total else None,
        "wall_seconds_incl_trigger": round(wall, 1),
        "stages": stages,
        "holdout_oct_dec": holdout,
        "target_seconds": 300,
        "target_auc": 0.72,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(__file__).parent / "results" / "training_dag.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
