"""The benchmark's baseline: the router's prediction endpoint in a bare FastAPI app, without Ray.

It runs the same :class:`flightline.serving.runtime.RouterRuntime` as each Ray Serve router replica (same
schemas, feature read, models, traffic policy, breakers and prediction log), so the benchmark's ratio
measures what Ray Serve itself costs, not differences in the endpoint's work. Like a replica (Serve's
``RAY_SERVE_FREEZE_GC_ON_STARTUP``), it freezes its startup heap out of the GC's scans: unfrozen, the
~430k long-lived objects made every full collection a 200-400 ms stall under load.

    uvicorn --factory benchmarks.bare_app:create_app --port 8099
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from flightline.serving.request_limits import BodySizeLimit
from flightline.serving.runtime import FeaturesUnavailableError, RouterRuntime
from flightline.serving.schemas import BatchIn, BatchOut, FlightIn, PredictionOut


def create_app() -> FastAPI:
    from flightline.platform.config import get_settings

    runtime = RouterRuntime(get_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.started()
        gc.collect()
        gc.freeze()
        yield
        await runtime.close()

    app = FastAPI(title="bare baseline", lifespan=lifespan)
    app.add_middleware(BodySizeLimit)  # as the router has it

    @app.exception_handler(FeaturesUnavailableError)
    async def unavailable(_: Request, exc: FeaturesUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)  # as the router answers it

    @app.post("/v1/predict/flight-delay", response_model=PredictionOut)
    async def predict(flight: FlightIn) -> PredictionOut:
        return await runtime.predict_one(flight)

    @app.post("/v1/predict/flight-delay/batch", response_model=BatchOut)
    async def predict_batch(batch: BatchIn) -> BatchOut:
        return BatchOut(predictions=await runtime.predict(batch.flights))

    return app
