"""The prediction engine of one serving process: models, feature reads, traffic policy, log and Router.

The Ray Serve router deployment (``ray_serve/app.py``) runs one per replica; the benchmark's bare FastAPI
app (``benchmarks/bare_app.py``) runs the same one without Ray, so the benchmark's ratio is what Serve
itself costs. Everything async runs in the caller's event loop, started by ``started()`` (the replica's
constructor, the bare app's startup) or else by the first request.

Single-flight requests go through a :class:`RequestBatcher`: those that arrive while a batch is being
scored are scored together next, with one feature query and one model call per variant. On 2 cores the
per-call cost of the feature read and the model (query round trip, decoding, LightGBM's call setup) is most
of one flight's work, so under concurrent load this is most of the throughput (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from flightline.models.servable import is_booster
from flightline.platform.errors import FlightlineConfigError
from flightline.serving.batcher import RequestBatcher
from flightline.serving.breaker import CircuitBreaker
from flightline.serving.guard import roll_back_async, rollback_reason
from flightline.serving.model_loader import AliasedModel
from flightline.serving.policy import CHALLENGER, CHAMPION, DEFAULT_POLICY, read_policy_async
from flightline.serving.prediction_log import PredictionLogger
from flightline.serving.router import Router, Scorer
from flightline.serving.tables import ensure_tables

if TYPE_CHECKING:
    from flightline.features.online import OnlineFeatureReader, ServedFeatures
    from flightline.platform.config import Settings
    from flightline.serving.schemas import FlightIn, PredictionOut

log = logging.getLogger(__name__)

_POLL_STEP_LIMIT_S = 5.0
"""Longest a poll's policy read (one indexed row; past it the connection is replaced) or version question may take."""


def _poll_failure(exc: Exception) -> str:
    """A poll step's failure for status and logs (a timeout's own text is empty)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {_POLL_STEP_LIMIT_S:g} s"
    return f"{type(exc).__name__}: {exc}"[:500]


class FeaturesUnavailableError(FlightlineConfigError):
    """The Feast registry could not be read (no ``feast apply`` yet): no request can be scored."""


class RouterRuntime:
    """Champion and challenger (in this process, or remote scorers), the online feature pool and the poller."""

    def __init__(
        self,
        settings: Settings,
        *,
        remote_scorers: dict[str, Scorer] | None = None,
        remote_versions: dict[str, Callable[[], Awaitable[str | None]]] | None = None,
    ) -> None:
        """``remote_scorers``: alias -> scorer of a model served elsewhere; None loads both aliases here.
        ``remote_versions``: alias -> the version that model serves now, asked at each poll."""
        ensure_tables(settings)
        self._remote_versions = remote_versions or {}
        self._remote_seen: dict[str, str] = {}
        self._versions_asked: asyncio.Task[None] | None = None
        self.settings = settings
        self.models: dict[str, AliasedModel] = {}
        self._followers: list[threading.Thread] = []
        if remote_scorers is None:
            for alias in (CHAMPION, CHALLENGER):
                self.models[alias] = AliasedModel(settings, alias)
                self.models[alias].refresh()
        self.logger = PredictionLogger(settings)
        self.policy = DEFAULT_POLICY
        self.reader: OnlineFeatureReader | None = None
        self.reader_error: str | None = "not loaded yet"
        self._pool: Any = None
        self._policy_conn: Any = None
        self.policy_read_at: str | None = None  # when the policy above was last read (UTC)
        self.policy_error: str | None = None  # why the last read failed (the policy read before still applies)
        self._start: asyncio.Future[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self.router = Router(
            settings,
            scorers={**(remote_scorers or {}), **{name: _local_scorer(m) for name, m in self.models.items()}},
            read_features=self._read_features,
            policy=lambda: self.policy,
            logger=self.logger,
        )
        for alias, model in self.models.items():
            # a new version starts with a closed breaker: the failures that opened it were the old one's
            # (left open, it would refuse the new version for serve_breaker_reset_s, and trip a rollback guard)
            self._followers.append(model.follow(settings.serve_model_poll_s, on_swap=self.router.breakers[alias].reset))
        self.batcher = RequestBatcher(self._predict_received, max_batch=settings.serve_max_batch)
        # while the store hangs, every batch would wait out the read timeout, one batch at a time
        self.store_breaker = CircuitBreaker(
            "online_store", failures=settings.serve_breaker_failures, reset_after_s=settings.serve_breaker_reset_s
        )

    async def predict(self, flights: list[FlightIn]) -> list[PredictionOut]:
        """A caller's batch, scored as it is (the batch endpoint)."""
        await self.started()
        return await self.router.predict(flights)

    async def predict_one(self, flight: FlightIn) -> PredictionOut:
        """One flight, scored together with the single-flight requests that arrive beside it."""
        if self.settings.serve_max_batch == 1:  # batching off: each request scored on its own, concurrently
            return (await self.predict([flight]))[0]
        return await self.batcher.submit(flight)

    async def _predict_received(self, flights: list[FlightIn], received_at: list[float]) -> list[PredictionOut]:
        await self.started()
        return await self.router.predict(flights, received_at=received_at)

    async def started(self) -> None:
        """Open the feature pool, read policy and views once, start the poller: once, in the caller's loop.

        The start is a task of its own, shielded from the request that began it: a client that gives up
        (Serve then cancels its request) must not leave the process half-started with every later request
        waiting. A start that failed is tried again by the next request.
        """
        if self._start is None or (self._start.done() and (self._start.cancelled() or self._start.exception())):
            self._start = asyncio.ensure_future(self._start_once())
        await asyncio.shield(self._start)

    async def close(self) -> None:
        """Write the queued prediction log rows, stop the poller and the alias followers, close the
        connections: a replica's graceful shutdown, the bare app's, a test's. Safe to call twice."""
        if not await asyncio.to_thread(self.logger.close):  # 5 s: within the 10 s the serve config leaves
            log.warning("prediction log: rows still queued at shutdown were not written (written %d, dropped %d)",
                        self.logger.written, self.logger.dropped)
        for task in (self._poller, self._versions_asked):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for model in self.models.values():
            model.stop_following()
        if self._pool is not None:
            await self._pool.close()
        if self._policy_conn is not None:
            await self._policy_conn.close()

    async def _start_once(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        if self._pool is None:
            pool = AsyncConnectionPool(
                self.settings.postgres_dsn(self.settings.feast_db), min_size=1, max_size=4, open=False,
                kwargs={"autocommit": True},
            )
            await pool.open()
            self._pool = pool
        await self._poll_once()
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        """Keep the traffic policy and the Feast view definitions current (no redeploy needed), and apply
        the policy's rollback guard."""
        while True:
            await asyncio.sleep(self.settings.serve_policy_poll_s)
            await self._poll_once()

    async def _poll_once(self) -> None:
        from flightline.features.online import OnlineFeatureReader

        if self.reader is None:
            try:
                self.reader = await asyncio.to_thread(OnlineFeatureReader.from_settings, self.settings)
                self.reader_error = None
            except Exception as exc:  # noqa: BLE001 - requests are answered on fallbacks; status says why
                self.reader_error = _poll_failure(exc)
                log.warning("feature definitions unavailable: %s", self.reader_error)
        try:
            # bounded: a read stuck on a lock or a dead connection would otherwise freeze the policy unseen
            async with asyncio.timeout(_POLL_STEP_LIMIT_S):
                await self._read_policy()
            self.policy_read_at, self.policy_error = dt.datetime.now(dt.UTC).isoformat(), None
        except Exception as exc:  # noqa: BLE001 - keep the last policy read; status reports why and since when
            self.policy_error = _poll_failure(exc)
            log.warning("traffic policy poll failed, still applying the policy read at %s: %s",
                        self.policy_read_at, self.policy_error)
            conn, self._policy_conn = self._policy_conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        if self._remote_versions and (self._versions_asked is None or self._versions_asked.done()):
            # beside the poll, not in it: a busy model deployment answers late, and the policy must not wait
            self._versions_asked = asyncio.create_task(self._follow_remote_versions())

    async def _follow_remote_versions(self) -> None:
        await asyncio.gather(*(self._follow_remote_version(alias, version_of)
                               for alias, version_of in self._remote_versions.items()))

    async def _follow_remote_version(self, alias: str, version_of: Callable[[], Awaitable[str | None]]) -> None:
        """Close the breaker of a model served elsewhere once another version serves its alias, as a colocated
        model's swap does: the failures that opened it were the old version's, and left open it would refuse
        the new one for ``serve_breaker_reset_s`` and count those refusals against a rollback guard."""
        try:
            async with asyncio.timeout(_POLL_STEP_LIMIT_S):
                version = await version_of()
        except Exception as exc:  # noqa: BLE001 - the requests to it report its state; ask again next poll
            log.warning("%s: could not ask which version it serves: %s", alias, _poll_failure(exc))
            return
        if version is None:
            return
        seen, self._remote_seen[alias] = self._remote_seen.get(alias), version
        if seen is not None and seen != version:
            self.router.breakers[alias].reset()
            log.info("%s now serves v%s (was v%s); its breaker starts closed", alias, version, seen)

    async def _read_policy(self) -> None:
        """Read the latest policy, and apply its rollback guard to this replica's challenger tally."""
        import psycopg

        if self._policy_conn is None or self._policy_conn.closed:
            self._policy_conn = await psycopg.AsyncConnection.connect(
                self.settings.postgres_dsn(self.settings.warehouse_db), autocommit=True, connect_timeout=5
            )
        self.policy = await read_policy_async(self._policy_conn)
        reason = rollback_reason(self.policy, self.router.tally)
        if reason is not None:
            if await roll_back_async(self._policy_conn, self.policy, reason):
                log.warning("rolled back to the champion: %s", reason)
            self.policy = await read_policy_async(self._policy_conn)

    async def _read_features(self, requests: list[Any]) -> list[ServedFeatures]:
        if self.reader is None:
            raise FeaturesUnavailableError(f"feature definitions unavailable ({self.reader_error}); run `feast apply`")
        breaker, limit = self.store_breaker, self.settings.serve_model_timeout_s
        if not breaker.allow():
            return self.reader.unavailable(
                requests, f"online store circuit open (reads failed {breaker.consecutive_failures} times in a row)"
            )
        try:
            # bounded: a batch waiting on a hung query would hold up every request behind it
            async with asyncio.timeout(limit), self._pool.connection(timeout=limit) as conn:
                served = await self.reader.read_async(conn, requests)
        except asyncio.CancelledError:
            breaker.abandoned()
            raise
        except TimeoutError:
            breaker.failure()
            return self.reader.unavailable(requests, f"feature read took over {limit:g} s")
        except Exception as exc:  # noqa: BLE001 - the store being down is a flagged fallback, not a 500
            breaker.failure()
            return self.reader.unavailable(requests, f"{type(exc).__name__}: {exc}"[:300])
        breaker.success()
        return served

    def status(self) -> dict[str, Any]:
        """Policy, breakers, feature readiness and prediction-log counters (models: see ``models``)."""
        return {
            "policy": self.policy.as_dict(),
            "policy_read": {"at": self.policy_read_at, "error": self.policy_error},
            "breakers": {
                **{name: b.as_dict() for name, b in self.router.breakers.items()},
                "online_store": self.store_breaker.as_dict(),
            },
            "challenger_tally": self.router.tally.as_dict(),
            "features": {"ready": self.reader is not None, "error": self.reader_error},
            "prediction_log": {"written": self.logger.written, "dropped": self.logger.dropped},
            "batching": self.batcher.as_dict(),
        }

    def health_problem(self) -> str | None:
        """Why this process should be restarted (a background worker died), or None."""
        if not self.logger.alive:
            return "prediction log writer stopped"
        if self._poller is not None and self._poller.done():
            return "policy poller stopped"
        if not all(thread.is_alive() for thread in self._followers):
            return "model alias follower stopped"
        return None


def _local_scorer(model: AliasedModel) -> Scorer:
    """A LightGBM booster scores on the event loop (bounded C work, ~50 us for a batch: a thread hop and the
    GIL handoffs around it cost more); any other pyfunc in a thread, so the router's timeout can fire."""

    async def score(rows: list[list[float]]) -> tuple[list[float], str]:
        loaded = model.loaded()  # pinned: an alias swapped to a slow pyfunc meanwhile must not run on the loop
        if is_booster(loaded[0]):
            return model.predict(rows, loaded)
        return await asyncio.to_thread(model.predict, rows, loaded)

    return score
