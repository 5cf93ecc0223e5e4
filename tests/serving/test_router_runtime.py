"""RouterRuntime in-process (no Ray): batching on and off give each request its own answer, the same one.

Real Feast online tables, real MLflow models, real policy table and prediction log: only HTTP is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest
from serving_fixtures import DEPARTURE, flight

if TYPE_CHECKING:
    from flightline.platform.config import Settings
    from flightline.serving.schemas import PredictionOut

pytestmark = pytest.mark.integration


def _answers(settings: Settings, max_batch: int) -> tuple[list[PredictionOut], dict[str, Any]]:
    """Eight flights sent concurrently as single requests (under an A/B split: both models answer)."""
    from flightline.models.servable import is_booster
    from flightline.serving.runtime import RouterRuntime
    from flightline.serving.schemas import FlightIn

    runtime = RouterRuntime(settings.model_copy(update={"serve_max_batch": max_batch}))
    flights = [
        FlightIn.model_validate(
            flight(flight_number=400 + k, scheduled_departure=(DEPARTURE + dt.timedelta(minutes=20 * k)).isoformat())
        )
        for k in range(8)
    ]

    async def scenario() -> list[PredictionOut]:
        try:
            await runtime.started()
            return await asyncio.gather(*(runtime.predict_one(f) for f in flights))
        finally:
            await runtime.close()

    assert is_booster(runtime.models["champion"].loaded()[0])  # the trained LightGBM takes the fast path
    return asyncio.run(scenario()), runtime.batcher.as_dict()


def test_batching_off_scores_each_request_alone_with_the_same_answers(serve_url: str, platform: Settings) -> None:
    from flightline.serving.policy import set_policy
    from flightline.serving.schemas import PolicyIn

    set_policy(platform, PolicyIn(mode="ab", challenger_percent=50, experiment="runtime-test",
                                          set_by="tests", reason="both variants in one batch"))
    try:
        alone, alone_batching = _answers(platform, max_batch=1)
        together, together_batching = _answers(platform, max_batch=32)
    finally:
        set_policy(platform, PolicyIn(set_by="tests", reason="end of runtime test"))
    assert alone_batching["batches"] == 0  # max_batch 1: the batcher is bypassed
    assert together_batching["batches"] >= 1 and together_batching["largest_batch"] > 1
    assert {a.variant for a in alone} == {"champion", "challenger"}  # else the pairing below proves little
    for one, batched in zip(alone, together, strict=True):  # each caller got its own flight's answer
        assert (batched.variant, batched.model_version) == (one.variant, one.model_version)
        assert batched.delay_probability == pytest.approx(one.delay_probability)
        assert batched.features == one.features


def test_closing_writes_the_queued_log_rows_then_reports_the_writer_stopped(serve_url: str, platform: Settings) -> None:
    """A replica's graceful shutdown closes its runtime (``FlightRouter.__del__``): the rows of the requests
    answered just before are in the table when ``close`` returns, not lost with the process."""
    from flightline.platform.database import connect
    from flightline.serving.runtime import RouterRuntime
    from flightline.serving.schemas import FlightIn

    runtime = RouterRuntime(platform)
    flights = [FlightIn.model_validate(flight(flight_number=700 + k)) for k in range(20)]

    async def scenario() -> tuple[list[PredictionOut], str | None]:
        await runtime.started()
        answers = await asyncio.gather(*(runtime.predict_one(f) for f in flights))
        healthy = runtime.health_problem()
        await runtime.close()
        return answers, healthy

    answers, problem_while_serving = asyncio.run(scenario())
    with connect(platform, platform.warehouse_db) as conn:  # no waiting: close() returned after the write
        logged = conn.execute("select count(*) from serving.prediction_log where request_id = any(%s)",
                              ([a.request_id for a in answers],)).fetchone()[0]
    assert logged == len(flights)
    assert problem_while_serving is None
    assert runtime.health_problem() == "prediction log writer stopped"  # a closed runtime must not look healthy
    assert runtime.status()["prediction_log"] == {"written": len(flights), "dropped": 0}


def test_a_trial_call_whose_caller_is_cancelled_frees_the_breaker(serve_url: str, platform: Settings) -> None:
    """A half-open breaker lets one trial call through. Serve's Python proxy cancels a request whose client
    disconnects; a trial cancelled so must free the trial, else the breaker refuses every later call until
    the alias moves."""
    from serving_fixtures import register_code_model, set_alias

    from flightline.serving.runtime import RouterRuntime
    from flightline.serving.schemas import FlightIn

    # a model name of its own: the platform's aliases, which the Ray router follows, never move
    settings = platform.model_copy(update={"model_name": "breaker_trial_test", "serve_breaker_reset_s": 1.0})
    set_alias(settings, "champion", register_code_model(settings, delay_s=2.0))  # every call times out
    runtime = RouterRuntime(settings)
    one = [FlightIn.model_validate(flight())]

    async def scenario() -> tuple[list[str | None], str | None]:
        try:
            await runtime.started()
            tripped = [(await runtime.predict(one))[0].fallback_reason for _ in range(settings.serve_breaker_failures)]
            await asyncio.sleep(settings.serve_breaker_reset_s)  # half-open: the next call is the trial
            trial = asyncio.create_task(runtime.predict(one))
            await asyncio.sleep(settings.serve_model_timeout_s / 4)
            trial.cancel()  # its caller gave up, well within the model's timeout
            with contextlib.suppress(asyncio.CancelledError):
                await trial
            return tripped, (await runtime.predict(one))[0].fallback_reason
        finally:
            await runtime.close()

    tripped, after = asyncio.run(scenario())
    assert all(reason and "champion timed out" in reason for reason in tripped), tripped
    assert after and "champion timed out" in after, after  # tried again, not refused as "circuit open"
