"""The router's replicas under Ray Serve: scale-out under load, a crashed replica, graceful removal.

They run on a second application ("replicas", at /replicas) deployed beside the platform's from the same
rendered serve config, so its router has the shipped autoscaling, health-check and shutdown settings,
while the platform's own router, which other tests count on having one replica, is left alone. The
tests run in file order: the first scales the app to two replicas, the second kills one, the third
removes the app.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from serving_fixtures import flight, wait_for_versions

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration

APP, ROUTER = "replicas", "FlightRouter"
PREDICT = "/v1/predict/flight-delay"


@dataclass
class Answer:
    started: float
    ended: float
    outcome: int | str  # the HTTP status, or the error's type when no response came
    request_ids: list[str] = field(default_factory=list)


class Load:
    """``clients`` concurrent clients posting ``body`` in a loop, from a thread of their own, until the
    ``with`` block ends; every answer is recorded (a 200 only when each prediction is the champion's)."""

    def __init__(self, url: str, body: dict[str, Any], *, clients: int, champion: str) -> None:
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(url, body, clients, champion),),
                                        daemon=True)

    async def _run(self, url: str, body: dict[str, Any], clients: int, champion: str) -> None:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
            await asyncio.gather(*(self._client(client, url, body, champion) for _ in range(clients)))

    async def _client(self, client: httpx.AsyncClient, url: str, body: dict[str, Any], champion: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as exc:
                self.answers.append(Answer(started, time.monotonic(), type(exc).__name__))
                continue
            outcome: int | str = response.status_code
            ids: list[str] = []
            if outcome == 200:
                predictions = response.json().get("predictions") or [response.json()]
                ids = [p["request_id"] for p in predictions]
                if any((p["variant"], p["model_version"]) != ("champion", champion) for p in predictions):
                    outcome = f"200 from another variant: {predictions[0]}"
            self.answers.append(Answer(started, time.monotonic(), outcome, ids))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=150)

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.outcome != 200]


def _replica_logs(platform: Settings) -> dict[Path, str]:
    from flightline.platform import serve_server

    return {path: path.read_text() for path in serve_server.replica_logs(platform, ROUTER, APP)}


def _running(platform: Settings) -> int:
    """Router replicas Serve reports RUNNING while the deployment is HEALTHY (0 otherwise)."""
    from flightline.platform import serve_server

    router = serve_server.application_status(platform, APP).get("deployments", {}).get(ROUTER, {})
    return router.get("replica_states", {}).get("RUNNING", 0) if router.get("status") == "HEALTHY" else 0


@pytest.fixture(scope="module")
def replicas_url(serve_url: str, platform: Settings, models: dict[str, str], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    """The "replicas" application, up with one router replica; the platform's config alone afterwards."""
    import yaml

    from flightline.platform import serve_server
    from flightline.platform.processes import wait_until

    without_rag = platform.model_copy(update={"serve_rag": False})
    app = yaml.safe_load(serve_server.render_config(without_rag).read_text())["applications"][0]
    config = yaml.safe_load(serve_server.render_config(platform).read_text())
    config["applications"].append({**app, "name": APP, "route_prefix": f"/{APP}"})
    path = tmp_path_factory.mktemp("replicas") / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    url = f"{serve_url}/{APP}"
    try:
        serve_server.deploy(platform, config=path)
        wait_for_versions(url, {"champion": models["champion"]}, timeout=240)
        # HAProxy reloads its config as the new app settles, and a fresh connection answered 404 for a moment
        # after the status above (seen once at the load's start, 0.2 s): the tests start once it routes
        wait_until("the replicas app routed on fresh connections", lambda: all(
            httpx.post(f"{url}{PREDICT}", json=flight(), timeout=30).status_code == 200 for _ in range(20)
        ), timeout=60)
        yield url
    finally:
        serve_server.deploy(platform)


def test_router_scales_out_under_load_and_the_new_replica_answers(
    replicas_url: str, platform: Settings, models: dict[str, str]
) -> None:
    """Above ``target_ongoing_requests`` (16) for the look-back window, Serve adds the second replica
    (``max_replicas``); HAProxy sends it traffic, and no request fails while it joins."""
    from flightline.platform import serve_server
    from flightline.platform.processes import wait_until

    assert len(serve_server.replica_pids(platform, ROUTER, APP)) == 1
    logs_before = set(_replica_logs(platform))
    batch = {"flights": [flight(flight_number=n) for n in range(1, 101)]}  # ~20 ms a request: ongoing ~ clients
    with Load(f"{replicas_url}{PREDICT}/batch", batch, clients=32, champion=models["champion"]) as load:
        wait_until("second router replica", lambda: _running(platform) == 2, timeout=180, interval=3)
        new_logs = [p for p in _replica_logs(platform) if p not in logs_before]
        assert len(new_logs) == 1, {path.name: path.read_text()[-3000:] for path in new_logs}  # why another began
        wait_until("the new replica's first answers",
                   lambda: "flight-delay/batch 200" in new_logs[0].read_text(), timeout=60)
    assert len(serve_server.replica_pids(platform, ROUTER, APP)) == 2
    assert load.answers and not load.failed(), load.failed()[:3]


def test_a_killed_replica_is_replaced_and_only_its_in_flight_requests_fail(
    replicas_url: str, platform: Settings, models: dict[str, str]
) -> None:
    """SIGKILL (a crash, the OOM killer): HAProxy retries the requests the replica was answering on the
    other one (``retry-on empty-response``), or, at worst, they fail; everything sent later is answered by
    the survivor while Serve starts a replacement."""
    from flightline.platform import serve_server
    from flightline.platform.processes import wait_until

    before = serve_server.replica_pids(platform, ROUTER, APP)
    assert len(before) == 2
    clients = 8
    with Load(f"{replicas_url}{PREDICT}", flight(), clients=clients, champion=models["champion"]) as load:
        time.sleep(2)
        killed_at = time.monotonic()
        os.kill(before[0], signal.SIGKILL)

        def replaced() -> bool:
            pids = serve_server.replica_pids(platform, ROUTER, APP)
            return before[0] not in pids and len(pids) == 2 and _running(platform) == 2

        wait_until("replacement router replica", replaced, timeout=180, interval=3)
        recovered_at = time.monotonic()
        time.sleep(2)
    failed = load.failed()
    assert len(failed) <= clients, failed[:3]
    # in flight at the kill, or sent in the instant before HAProxy saw the replica's sockets close
    assert all(a.started < killed_at + 1 for a in failed), [a for a in failed if a.started >= killed_at + 1][:3]
    assert sum(1 for a in load.answers if a.started > killed_at + 0.5 and a.ended < recovered_at) > 0  # the survivor
    assert [a for a in load.answers if a.started > recovered_at] and all(
        a.outcome == 200 for a in load.answers if a.started > recovered_at)


def test_removed_replicas_write_their_prediction_log_before_they_exit(
    replicas_url: str, platform: Settings, models: dict[str, str]
) -> None:
    """Removing the app stops its replicas gracefully (so do scale-down and redeploys): each closes its
    runtime in ``__del__`` within ``graceful_shutdown_timeout_s``, writing its queued log rows."""
    from flightline.platform import serve_server
    from flightline.platform.database import connect
    from flightline.platform.processes import wait_until

    running = serve_server.replica_pids(platform, ROUTER, APP)
    with Load(f"{replicas_url}{PREDICT}", flight(), clients=4, champion=models["champion"]) as load:
        time.sleep(2)
    serve_server.deploy(platform)  # the platform's config alone: Serve removes this app
    wait_until("replicas app removal", lambda: not serve_server.replica_pids(platform, ROUTER, APP)
               and not serve_server.application_status(platform, APP), timeout=180, interval=2)
    closed = [path for path, text in _replica_logs(platform).items() if "prediction runtime closed" in text]
    assert len(closed) >= len(running), f"{len(closed)} closed runtimes for {len(running)} stopped replicas"
    for path in closed:
        text = path.read_text()
        assert text.index("prediction runtime closed") < text.index("Graceful shutdown complete"), path.name

    ids = [i for a in load.answers for i in a.request_ids]
    assert ids and not load.failed()
    with connect(platform, platform.warehouse_db) as conn:
        logged = conn.execute("select count(*) from serving.prediction_log where request_id = any(%s)",
                              (ids,)).fetchone()[0]
    assert logged == len(ids)
