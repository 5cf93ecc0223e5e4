"""The platform's Ray Serve application: one routing ingress in front of every model.

    POST /v1/predict/flight-delay         one flight -> delay probability, model, version, variant, features
    POST /v1/predict/flight-delay/batch   many flights in one request
    GET  /v1/serving/status               this replica's policy, breakers, model versions, counters
    POST /v1/embeddings, /v1/rag/search   RetrievalService (ray_serve/rag.py), composed by handle
    GET  /healthz, /docs                  liveness and OpenAPI

Routing rules live in ``flightline.serving``; this file holds connections and handles. Start it with
``flightline serve up`` (or ``serve run ray_serve.app:build_app`` / ``serve deploy ray_serve/serve_config.yaml``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from flightline.platform.errors import FlightlineConfigError, NotFoundError, ServiceError
from flightline.rag.schemas import EmbeddingRequest, EmbeddingResponse, SearchRequest, SearchResponse
from flightline.serving.request_limits import BodySizeLimit, validation_errors
from flightline.serving.schemas import BatchIn, BatchOut, FlightIn, PredictionOut
from ray_serve.models import FlightDelayModel
from ray_serve.rag import build_retrieval_service

# Serve writes this logger to the replica's log file (logs/serve/replica_<app>_<deployment>_<id>.log)
replica_log = logging.getLogger("ray.serve")

api = FastAPI(
    title="flightline serving",
    version="1",
    description="Flight-delay predictions (champion/challenger, canary, shadow), embeddings and RAG search.",
)
api.add_middleware(BodySizeLimit)  # 413 before an oversized body is read (request_limits)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, with a short echo of the input (``request_limits.validation_errors``)."""
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(validation_errors(exc.errors()))})


class AppArgs(BaseModel):
    """Builder arguments (serve config ``args``)."""

    rag: bool = Field(default=True, description="compose RetrievalService for /v1/embeddings and /v1/rag/search")
    colocate_models: bool = Field(
        default=True,
        description="load champion and challenger inside the router (one Ray hop less per request; see "
        "docs/benchmarks.md) instead of calling the champion/challenger deployments",
    )
    rag_args: dict[str, Any] = Field(default_factory=dict, description="RetrievalServiceArgs")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=32,
    health_check_period_s=10,
    health_check_timeout_s=30,
)
@serve.ingress(api)
class FlightRouter:
    async def __init__(
        self, models: dict[str, DeploymentHandle] | None = None, retrieval: DeploymentHandle | None = None
    ) -> None:
        """``models``: alias -> model deployment handle; None loads both aliases in this replica.

        The runtime starts here, before Serve sends the replica traffic: started by its first request
        instead, that request and those beside it waited ~0.2-0.3 s for the feature definitions, the
        policy and the pool, after every scale-up and rolling update. A start that fails (Postgres down) is
        reported and tried again by the next request, as before.
        """
        from flightline.platform.config import get_settings
        from flightline.serving.runtime import RouterRuntime

        self._handles = models or {}
        self._runtime = RouterRuntime(
            get_settings(),
            remote_scorers=None if models is None else {name: self._remote_scorer(h) for name, h in models.items()},
            remote_versions=None if models is None else {name: self._remote_version(h) for name, h in models.items()},
        )
        self._retrieval = retrieval
        began = time.perf_counter()
        try:
            await self._runtime.started()
        except Exception:  # noqa: BLE001 - the replica still answers (503s, status) and retries the start
            replica_log.exception("prediction runtime did not start; the next request tries again")
        else:
            replica_log.info("prediction runtime started in %.2f s (feature definitions ready: %s)",
                             time.perf_counter() - began, self._runtime.reader is not None)

    @staticmethod
    def _remote_scorer(handle: DeploymentHandle) -> Any:
        async def score(rows: list[list[float]]) -> tuple[list[float], str]:
            response = handle.predict.remote(rows)
            try:
                return await response
            except asyncio.CancelledError:
                response.cancel()
                raise

        return score

    @staticmethod
    def _remote_version(handle: DeploymentHandle) -> Any:
        async def version() -> str | None:
            return (await handle.info.remote()).get("version")

        return version

    @staticmethod
    @contextlib.contextmanager
    def _unavailable_as_503() -> Iterator[None]:
        """On the class: Serve rebuilds the class in each replica, where a module function defined below it
        was missing (NameError)."""
        from flightline.serving.runtime import FeaturesUnavailableError

        try:
            yield
        except FeaturesUnavailableError as exc:
            raise HTTPException(503, str(exc)) from exc

    @api.post("/v1/predict/flight-delay", response_model=PredictionOut)
    async def predict(self, flight: FlightIn) -> PredictionOut:
        """Delay probability of one flight (15+ min late or cancelled), with the variant that answered."""
        with self._unavailable_as_503():
            return await self._runtime.predict_one(flight)

    @api.post("/v1/predict/flight-delay/batch", response_model=BatchOut)
    async def predict_batch(self, batch: BatchIn) -> BatchOut:
        """Many flights in one request (features read in one query, one model call per variant)."""
        with self._unavailable_as_503():
            return BatchOut(predictions=await self._runtime.predict(batch.flights))

    @api.get("/v1/serving/status")
    async def serving_status(self) -> dict[str, Any]:
        """This replica's view: breakers and counters are per replica, so it names itself."""
        await self._runtime.started()
        context = serve.get_replica_context()
        here = context.deployment
        models = {name: {**model.info(), "deployment": here} for name, model in self._runtime.models.items()}
        for name, handle in self._handles.items():
            try:
                models[name] = await handle.info.remote()
            except Exception as exc:  # noqa: BLE001 - report, do not fail the status page
                models[name] = {"error": str(exc)[:300]}
        return {"replica": context.replica_id.unique_id, "models": models, **self._runtime.status()}

    @api.post("/v1/embeddings")
    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        service = self._rag()
        try:
            return EmbeddingResponse.model_validate(await service.embeddings.remote(request.model_dump()))
        except NotFoundError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc

    @api.post("/v1/rag/search")
    async def search(self, request: SearchRequest) -> SearchResponse:
        service = self._rag()
        try:
            return SearchResponse.model_validate(await service.search.remote(request.model_dump()))
        except NotFoundError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except FlightlineConfigError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        except ServiceError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc

    def _rag(self) -> DeploymentHandle:
        if self._retrieval is None:
            raise HTTPException(404, "RAG is not mounted on this router (serve config args: rag: true)")
        return self._retrieval

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    async def check_health(self) -> None:
        """Unhealthy when a background worker of the runtime died (Serve then restarts the replica)."""
        problem = self._runtime.health_problem()
        if problem:
            raise RuntimeError(problem)

    async def __del__(self) -> None:
        """Serve's graceful shutdown (scale-down, redeploy, removal), after the in-flight requests: writes the
        prediction log rows still queued, which the replica's exit would otherwise lose."""
        await self._runtime.close()
        counters = self._runtime.status()["prediction_log"]
        replica_log.info("prediction runtime closed (prediction log: %d rows written, %d dropped)",
                         counters["written"], counters["dropped"])


def build_app(args: dict[str, Any]) -> Application:
    """Router (+ champion and challenger deployments unless colocated, + RetrievalService when ``rag``)."""
    parsed = AppArgs.model_validate(args)
    models = None
    if not parsed.colocate_models:
        models = {
            alias: FlightDelayModel.options(name=alias, user_config={"alias": alias}).bind()
            for alias in ("champion", "challenger")
        }
    retrieval = build_retrieval_service(parsed.rag_args) if parsed.rag else None
    return FlightRouter.bind(models, retrieval)
