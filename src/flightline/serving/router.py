"""The router's core: scores a batch of flights on champion and challenger, with breakers and fallbacks.

Features are read once; rows are grouped by variant; challenger failures are re-scored by the champion,
champion failures answered with the documented fallback probability; shadow scoring runs in the
background (logged, never returned). Ray Serve deployments in ``ray_serve/`` hold state and call this
through :class:`flightline.serving.runtime.RouterRuntime`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from flightline.models.servable import not_probabilities
from flightline.serving.breaker import CircuitBreaker
from flightline.serving.guard import ChallengerTally
from flightline.serving.policy import CHALLENGER, CHAMPION, FALLBACK, TrafficPolicy, assign_variant

if TYPE_CHECKING:
    from flightline.features.online import ServedFeatures
    from flightline.platform.config import Settings
    from flightline.serving.prediction_log import PredictionLogger
    from flightline.serving.schemas import FlightIn, PredictionOut


Scorer = Callable[[list[list[float]]], Awaitable[tuple[list[float], str]]]
"""Scores model rows; returns probabilities and the model version that answered."""


class Router:
    """Routes a batch of flights to champion/challenger with breakers, fallbacks, shadow and logging."""

    def __init__(
        self,
        settings: Settings,
        *,
        scorers: dict[str, Scorer],
        read_features: Callable[[list[Any]], Awaitable[list[ServedFeatures]]],
        policy: Callable[[], TrafficPolicy],
        logger: PredictionLogger,
    ) -> None:
        self.settings = settings
        self._scorers = scorers
        self._read_features = read_features
        self._policy = policy
        self._logger = logger
        self.breakers = {
            name: CircuitBreaker(
                name, failures=settings.serve_breaker_failures, reset_after_s=settings.serve_breaker_reset_s
            )
            for name in scorers
        }
        self.tally = ChallengerTally()
        self._background: set[asyncio.Task[None]] = set()

    async def _score(self, variant: str, rows: list[list[float]]) -> tuple[list[float] | None, str | None, str | None]:
        """(probabilities, version, None) or (None, None, why it failed); never raises."""
        breaker = self.breakers[variant]
        if not breaker.allow():
            return None, None, f"{variant} circuit open"
        try:
            # a timeout scope, not wait_for: no task of its own per call (a scorer that never suspends costs
            # nothing extra)
            async with asyncio.timeout(self.settings.serve_model_timeout_s):
                probs, version = await self._scorers[variant](rows)
        except asyncio.CancelledError:
            breaker.abandoned()
            raise
        except TimeoutError:
            breaker.failure()
            return None, None, f"{variant} timed out after {self.settings.serve_model_timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - any model failure is routed around, and reported
            breaker.failure()
            return None, None, f"{variant} failed: {type(exc).__name__}: {str(exc)[:200]}"
        if wrong := not_probabilities(probs, len(rows)):  # a 500 (JSON has no NaN) or a wrong answer: a failure
            breaker.failure()
            return None, None, f"{variant} {wrong}"
        breaker.success()
        return probs, version, None

    async def predict(self, flights: list[FlightIn], *, received_at: list[float] | None = None) -> list[PredictionOut]:
        """``received_at``: each flight's arrival (perf_counter) when it waited for a batch; the logged
        latency then counts that wait."""
        from flightline.serving.schemas import FeatureReport, PredictionOut

        began = time.perf_counter()
        policy = self._policy()
        served = await self._read_features([f.to_request() for f in flights])
        keys = [f.sticky_key() for f in flights]
        routed = [assign_variant(policy, key) for key in keys]
        groups: dict[str, list[int]] = {}
        for i, variant in enumerate(routed):
            groups.setdefault(variant, []).append(i)
        results: list[tuple[float, str | None, str, str | None]] = [(0.0, None, FALLBACK, None)] * len(flights)
        outcomes = await asyncio.gather(
            *(self._score(v, [served[i].vector() for i in idx]) for v, idx in groups.items())
        )
        retry: list[int] = []
        reasons: dict[int, str] = {}
        for (variant, idx), (probs, version, error) in zip(groups.items(), outcomes, strict=True):
            for k, i in enumerate(idx):
                if probs is not None:
                    results[i] = (probs[k], version, variant, None)
                elif variant == CHALLENGER:
                    retry.append(i)
                    reasons[i] = error or ""
                else:
                    results[i] = (self.settings.serve_fallback_probability, None, FALLBACK, error)
        if retry:  # the challenger never fails a request: its rows go to the champion
            probs, version, error = await self._score(CHAMPION, [served[i].vector() for i in retry])
            for k, i in enumerate(retry):
                if probs is not None:
                    results[i] = (probs[k], version, CHAMPION, reasons[i])
                else:
                    results[i] = (self.settings.serve_fallback_probability, None, FALLBACK, f"{reasons[i]}; {error}")
        if CHALLENGER in groups:
            self.tally.count(policy.id, len(groups[CHALLENGER]), failed=len(retry))
        finished = time.perf_counter()
        out = []
        for i, flight in enumerate(flights):
            probability, version, variant, why = results[i]
            request_id = uuid.uuid4().hex
            feats = served[i].as_json()
            out.append(
                PredictionOut(
                    request_id=request_id,
                    delay_probability=probability,
                    model_name=self.settings.model_name,
                    model_version=version,
                    variant=variant,  # type: ignore[arg-type]
                    fallback_reason=why,
                    features=FeatureReport(**{k: v for k, v in feats.items() if k != "values"}),
                )
            )
            self._logger.log(
                {
                    "request_id": request_id, "model_name": self.settings.model_name, "variant": variant,
                    "model_version": version, "is_shadow": False, "fallback_reason": why,
                    "request": flight.model_dump(mode="json"), "features": feats, "prediction": probability,
                    "latency_ms": (finished - (received_at[i] if received_at else began)) * 1000,
                    "policy_id": policy.id, "routed_variant": routed[i], "sticky_key": keys[i],
                }
            )
        if policy.shadow and CHALLENGER in self._scorers:
            shadowed = [i for i, p in enumerate(out) if p.variant != CHALLENGER]
            if shadowed:
                task = asyncio.create_task(self._shadow(flights, keys, served, out, shadowed, policy))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return out

    async def _shadow(
        self, flights: list[FlightIn], keys: list[str], served: list[ServedFeatures], out: list[PredictionOut],
        idx: list[int], policy: TrafficPolicy,
    ) -> None:
        """Score with the challenger off the response path; log, never return."""
        began = time.perf_counter()
        probs, version, error = await self._score(CHALLENGER, [served[i].vector() for i in idx])
        latency_ms = (time.perf_counter() - began) * 1000
        for k, i in enumerate(idx):
            self._logger.log(
                {
                    "request_id": out[i].request_id, "model_name": self.settings.model_name, "variant": CHALLENGER,
                    "model_version": version, "is_shadow": True, "fallback_reason": error,
                    "request": flights[i].model_dump(mode="json"), "features": served[i].as_json(),
                    "prediction": probs[k] if probs is not None else None, "latency_ms": latency_ms,
                    "policy_id": policy.id, "sticky_key": keys[i],
                }
            )
