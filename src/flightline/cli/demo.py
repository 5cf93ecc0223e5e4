"""The README's main command: bring the platform up and run the example pipelines on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flightline.platform.config import Settings

Echo = Callable[[str], None]


def run_dag(settings: Settings, dag_id: str, echo: Echo, *, conf: Mapping[str, object] | None = None,
            logical_date: str | None = None, timeout: float = 900) -> str:
    """Trigger dag_id through the REST API, wait for it and say where to look; return the run id."""
    from flightline.platform.airflow_client import AirflowClient
    from flightline.platform.errors import ServiceError

    client = AirflowClient(settings)
    began = time.monotonic()
    run_id = client.trigger(dag_id, conf=conf, logical_date=logical_date)
    echo(f"  {dag_id}: triggered run {run_id}")
    state = client.wait(dag_id, run_id, timeout=timeout)
    link = f"{settings.airflow_url}/dags/{dag_id}/runs/{run_id}"
    if state != "success":
        failed = [task for task, task_state in client.task_states(dag_id, run_id).items() if task_state == "failed"]
        raise ServiceError("airflow", f"{dag_id} run {state}; failed tasks: {', '.join(failed) or '?'}; see {link}")
    if not client.task_states(dag_id, run_id):
        raise ServiceError("airflow", f"{dag_id} run {run_id} ran no task (logical date outside the DAG's dates?)")
    echo(f"  {dag_id}: {state} in {time.monotonic() - began:.0f} s  -> {link}")
    return run_id


EXAMPLE_FLIGHT = {  # UA1102 EWR->IAH, 05:15 New York time on 30 Dec 2013
    "carrier": "UA", "flight_number": 1102, "origin": "EWR", "destination": "IAH",
    "scheduled_departure": "2013-12-30T10:15:00Z", "tail_number": "N57868",
}
EXAMPLE_QUERY = {"query": "vitamin D deficiency and bone fractures", "k": 3, "mode": "hybrid", "collection": "scifact"}


def run(settings: Settings, echo: Echo) -> None:
    """Start everything, then run the example pipelines end to end and call the live endpoints."""
    import json

    import httpx

    from flightline.models import training
    from flightline.platform import stack

    began = time.monotonic()
    stack.up(settings, on_progress=lambda name, started: echo(f"  {name:<10} {'started' if started else 'up'}"))
    echo(f"platform healthy after {time.monotonic() - began:.0f} s")
    run_dag(settings, "platform_smoke", echo, timeout=300)
    run_dag(settings, "flight_delay_training", echo, conf=training.HOLDOUT_PARAMS,
            logical_date=training.manual_logical_date().isoformat(), timeout=1800)
    run_dag(settings, "embedding_ingestion", echo, conf={"collection": "scifact"}, timeout=1800)

    prediction = httpx.post(f"{settings.serve_url}/v1/predict/flight-delay", json=EXAMPLE_FLIGHT, timeout=60)
    echo(f"\nPOST {settings.serve_url}/v1/predict/flight-delay -> HTTP {prediction.status_code}")
    echo(json.dumps(prediction.json(), indent=2)[:1500])
    search = httpx.post(f"{settings.serve_url}/v1/rag/search", json=EXAMPLE_QUERY, timeout=60)
    echo(f"\nPOST {settings.serve_url}/v1/rag/search -> HTTP {search.status_code}")
    for hit in search.json().get("results", []):
        echo(f"  {hit['score']:.4f}  doc {hit['doc_id']}  {hit['text'][:90]}")
