"""Scores concurrent single-flight requests together: one feature query and one model call per batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


class RequestBatcher:
    """Scores concurrent single requests as batches, one batch at a time (as Ray Serve's ``@serve.batch``).

    There is no waiting window: a request that finds the batcher idle is scored at once (alone, or with
    those that arrived in the same event-loop turn), so batching adds no latency at low load. Requests
    that arrive while a batch is scored form the next one, up to ``max_batch``. A batch that raises is
    scored again one request at a time, so one request's error is never another's. A request whose
    caller gave up is still scored if its batch had started (and then logged like any other).
    """

    def __init__(
        self,
        score: Callable[[list[Any], list[float]], Awaitable[list[Any]]],
        *,
        max_batch: int,
    ) -> None:
        """``score(items, received_at)`` returns one result per item; ``received_at`` is perf_counter time."""
        self._score = score
        self._max_batch = max_batch
        self._waiting: list[tuple[Any, float, asyncio.Future[Any]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0
        self.largest_batch = 0

    async def submit(self, item: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, time.perf_counter(), future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let requests already read in this loop turn join the first batch
            while self._waiting:
                batch = [w for w in self._waiting[: self._max_batch] if not w[2].done()]
                del self._waiting[: self._max_batch]
                if batch:
                    await self._score_batch(batch)
        finally:
            self._runner = None
            for _, _, future in self._waiting:  # only left behind when this task was cancelled
                future.cancel()
            self._waiting.clear()

    async def _score_batch(self, batch: list[tuple[Any, float, asyncio.Future[Any]]]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        error: Exception | None
        try:
            results = await self._score([item for item, _, _ in batch], [at for _, at, _ in batch])
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the requests that own it
            if len(batch) > 1:
                for one in batch:
                    await self._score_batch([one])
                return
            results, error = [None], exc
        else:
            error = None
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "largest_batch": self.largest_batch, "max_batch": self._max_batch}
