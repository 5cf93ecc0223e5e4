"""A circuit breaker for each thing the router calls (a model, the online store)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures; open -> one trial call after ``reset_after_s``.

    While open, calls are refused at once instead of waiting for a timeout on every request.
    """

    def __init__(self, name: str, *, failures: int, reset_after_s: float, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self._threshold = failures
        self._reset_after = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self._reset_after else "open"

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Closed with no failures: after a success, or when another model version takes over the alias."""
        self._failures, self._opened_at, self._trial = 0, None, False

    def abandoned(self) -> None:
        """A call was cancelled before it answered (its caller gave up): no verdict, and a half-open trial's
        slot is free again; kept, it would refuse every later call."""
        self._trial = False

    def failure(self) -> None:
        self._failures += 1
        self._trial = False
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "consecutive_failures": self._failures}
