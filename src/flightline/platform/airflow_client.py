"""A small client for Airflow's REST API: trigger a DAG and wait for its run, as users and the demo do."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from flightline.platform.airflow_server import api_token
from flightline.platform.errors import NotFoundError, ServiceError

if TYPE_CHECKING:
    import datetime as dt

    from flightline.platform.config import Settings

TERMINAL_STATES = ("success", "failed")


class AirflowClient:
    """Authenticated calls to ``/api/v2`` of the platform's api-server."""

    def __init__(self, settings: Settings) -> None:
        self._base = f"{settings.airflow_url}/api/v2"
        self._http = httpx.Client(headers={"Authorization": f"Bearer {api_token(settings)}"}, timeout=30)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, f"{self._base}{path}", **kwargs)
        if response.status_code == 404:
            raise NotFoundError(f"Airflow has no {path!r} (HTTP 404): {response.text[:300]}")
        if response.status_code >= 400:
            raise ServiceError("airflow", f"{method} {path} -> HTTP {response.status_code}: {response.text[:300]}")
        return dict(response.json())

    def wait_for_dag(self, dag_id: str, *, timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed dag_id (new files take one refresh interval)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._request("GET", f"/dags/{dag_id}")
                return
            except NotFoundError:
                if time.monotonic() > deadline:
                    raise NotFoundError(
                        f"DAG {dag_id!r} was not parsed within {timeout:.0f} s; check the dag-processor log "
                        "and `airflow dags list-import-errors`"
                    ) from None
                time.sleep(2)

    def trigger(self, dag_id: str, *, conf: Mapping[str, Any] | None = None, logical_date: str | None = None,
                unpause: bool = True) -> str:
        """Start a manual run of dag_id with conf (its params); return the run id.

        A DAG with an ``end_date`` (the 2013 training DAG) needs a logical date inside its range:
        a run without one gets no tasks.
        """
        self.wait_for_dag(dag_id)
        if unpause:
            self.set_paused(dag_id, False)
        run = self._request(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": conf or {}}
        )
        return str(run["dag_run_id"])

    def set_paused(self, dag_id: str, paused: bool) -> bool:
        """Pause or unpause dag_id (a paused DAG's runs stay queued); return whether it was paused."""
        was_paused = bool(self._request("GET", f"/dags/{dag_id}")["is_paused"])
        self._request("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})
        return was_paused

    def runs(self, dag_id: str, *, logical_date: dt.datetime | None = None) -> list[dict[str, Any]]:
        """The runs of dag_id (newest first), or only those at logical_date."""
        params: dict[str, Any] = {"limit": 100, "order_by": "-run_after"}
        if logical_date is not None:
            params["logical_date_gte"] = params["logical_date_lte"] = logical_date.isoformat()
        return list(self._request("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"])

    def run_ids(self, dag_id: str) -> list[str]:
        return [run["dag_run_id"] for run in self.runs(dag_id)]

    def delete_run(self, dag_id: str, run_id: str) -> None:
        response = self._http.delete(f"{self._base}/dags/{dag_id}/dagRuns/{run_id}")
        if response.status_code not in (204, 404):
            raise ServiceError("airflow", f"DELETE run {run_id} -> HTTP {response.status_code}: {response.text[:300]}")

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self._request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """{task_id: state} of one run (mapped tasks collapse to their last state)."""
        items = self._request(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
        )["task_instances"]
        return {item["task_id"]: item["state"] for item in items}

    def wait(self, dag_id: str, run_id: str, *, timeout: float = 600, poll_s: float = 2) -> str:
        """Block until the run ends; return its final state ('success' or 'failed')."""
        deadline = time.monotonic() + timeout
        state = self.run_state(dag_id, run_id)
        while state not in TERMINAL_STATES:
            if time.monotonic() > deadline:
                raise ServiceError("airflow", f"run {run_id} of {dag_id} still {state!r} after {timeout:.0f} s")
            time.sleep(poll_s)
            state = self.run_state(dag_id, run_id)
        return state
