"""RequestBatcher without a platform: who is scored with whom, and whose error reaches whom."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flightline.serving.batcher import RequestBatcher


class Recorder:
    """A scoring function that records its batches; ``gate`` holds a batch until the test releases it."""

    def __init__(self, *, fail_on: set[Any] | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.received: list[list[float]] = []
        self.gate: asyncio.Event | None = None
        self.fail_on = fail_on or set()

    async def __call__(self, items: list[Any], received_at: list[float]) -> list[Any]:
        self.batches.append(list(items))
        self.received.append(list(received_at))
        if self.gate is not None:
            await self.gate.wait()
        bad = self.fail_on.intersection(items)
        if bad:
            raise ValueError(f"cannot score {sorted(bad)}")
        return [f"scored {item}" for item in items]


async def _batch_in_flight(item: str, *, max_batch: int) -> tuple[Recorder, RequestBatcher, asyncio.Future[Any]]:
    """A batcher whose first batch (``item`` alone) is being scored, held until ``score.gate`` is set."""
    score = Recorder()
    score.gate = asyncio.Event()
    batcher = RequestBatcher(score, max_batch=max_batch)
    answer = asyncio.ensure_future(batcher.submit(item))
    await asyncio.sleep(0.01)
    assert score.batches == [[item]]
    return score, batcher, answer


def test_lone_request_is_scored_at_once_and_concurrent_ones_together() -> None:
    async def scenario() -> None:
        score = Recorder()
        batcher = RequestBatcher(score, max_batch=32)
        assert await batcher.submit("a") == "scored a"
        assert score.batches == [["a"]]
        answers = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        assert answers == [f"scored {i}" for i in range(5)]  # each caller gets its own item's result
        assert score.batches[1:] == [[0, 1, 2, 3, 4]]
        assert batcher.as_dict() == {"batches": 2, "largest_batch": 5, "max_batch": 32}

    asyncio.run(scenario())


def test_arrivals_during_a_batch_form_the_next_one_up_to_max_batch() -> None:
    async def scenario() -> None:
        score, batcher, first = await _batch_in_flight("first", max_batch=3)
        later = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        assert len(score.batches) == 1  # nobody else scored while the batch runs
        score.gate.set()
        assert await first == "scored first"
        assert await asyncio.gather(*later) == [f"scored {i}" for i in range(5)]
        assert score.batches == [["first"], [0, 1, 2], [3, 4]]
        assert all(batch == sorted(batch) for batch in score.received)  # in order of arrival

    asyncio.run(scenario())


def test_a_failing_item_fails_only_its_own_request() -> None:
    async def scenario() -> None:
        score = Recorder(fail_on={"bad"})
        batcher = RequestBatcher(score, max_batch=8)
        results = await asyncio.gather(*(batcher.submit(i) for i in ("x", "bad", "y")), return_exceptions=True)
        assert results[0] == "scored x" and results[2] == "scored y"
        assert isinstance(results[1], ValueError) and "bad" in str(results[1])
        assert score.batches == [["x", "bad", "y"], ["x"], ["bad"], ["y"]]  # the batch, then one at a time

    asyncio.run(scenario())


def test_a_caller_that_gives_up_leaves_the_others_answered() -> None:
    async def scenario() -> None:
        score, batcher, running = await _batch_in_flight("running", max_batch=8)
        quitter = asyncio.ensure_future(batcher.submit("quitter"))
        stayer = asyncio.ensure_future(batcher.submit("stayer"))
        await asyncio.sleep(0.01)
        quitter.cancel()  # waits for the next batch, then its client disconnects
        score.gate.set()
        assert await running == "scored running"
        assert await stayer == "scored stayer"
        with pytest.raises(asyncio.CancelledError):
            await quitter
        assert score.batches == [["running"], ["stayer"]]  # not scored: it gave up before its batch began
        assert await batcher.submit("after") == "scored after"  # the batcher carries on

    asyncio.run(scenario())
