"""The README's main command: bring the platform up and run the example pipelines on it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flightline.config import Settings

Echo = Callable[[str], None]


def run_dag(settings: Settings, dag_id: str, echo: Echo, *, conf: dict[str, object] | None = None,
            timeout: float = 900) -> str:
    """Trigger dag_id through the REST API, wait for it and say where to look; return the run id."""
    from flightline.airflow_client import AirflowClient
    from flightline.errors import ServiceError

    client = AirflowClient(settings)
    began = time.monotonic()
    run_id = client.trigger(dag_id, conf=conf)
    echo(f"  {dag_id}: triggered run {run_id}")
    state = client.wait(dag_id, run_id, timeout=timeout)
    link = f"{settings.airflow_url}/dags/{dag_id}/runs/{run_id}"
    if state != "success":
        failed = [task for task, task_state in client.task_states(dag_id, run_id).items() if task_state == "failed"]
        raise ServiceError("airflow", f"{dag_id} run {state}; failed tasks: {', '.join(failed) or '?'}; see {link}")
    echo(f"  {dag_id}: {state} in {time.monotonic() - began:.0f} s  -> {link}")
    return run_id


def run(settings: Settings, echo: Echo) -> None:
    """Start everything, then run the example DAGs end to end."""
    from flightline import stack

    began = time.monotonic()
    stack.up(settings, on_progress=lambda name, started: echo(f"  {name:<10} {'started' if started else 'up'}"))
    echo(f"platform healthy after {time.monotonic() - began:.0f} s")
    run_dag(settings, "platform_smoke", echo, timeout=300)
