"""The platform's Ray Serve application: one routing ingress in front of every model.

    POST /v1/predict/flight-delay         one flight -> delay probability, model, version, variant, features
    POST /v1/predict/flight-delay/batch   many flights in one request
    GET  /v1/serving/status               policy, breakers, model versions, prediction-log counters
    POST /v1/embeddings, /v1/rag/search   RetrievalService (ray_serve/rag.py), composed by handle
    GET  /healthz, /docs                  liveness and OpenAPI

Routing rules live in ``flightline.serving``; this file holds connections and handles. Start it with
``flightline serve up`` (or ``serve run ray_serve.app:build_app`` / ``serve deploy ray_serve/serve_config.yaml``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from flightline.errors import FlightlineConfigError, NotFoundError
from flightline.schemas_rag import EmbeddingRequest, EmbeddingResponse, SearchRequest, SearchResponse
from flightline.schemas_serving import BatchIn, BatchOut, FlightIn, PredictionOut
from ray_serve.models import FlightDelayModel
from ray_serve.rag import build_retrieval_service

log = logging.getLogger(__name__)

api = FastAPI(
    title="flightline serving",
    version="1",
    description="Flight-delay predictions (champion/challenger, canary, shadow), embeddings and RAG search.",
)


class AppArgs(BaseModel):
    """Builder arguments (serve config ``args``)."""

    rag: bool = Field(default=True, description="compose RetrievalService for /v1/embeddings and /v1/rag/search")
    colocate_models: bool = Field(
        default=True,
        description="load champion and challenger inside the router (one Ray hop less per request; see the "
        "README's serving benchmark) instead of calling the champion/challenger deployments",
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
    def __init__(
        self, models: dict[str, DeploymentHandle] | None = None, retrieval: DeploymentHandle | None = None
    ) -> None:
        """``models``: alias -> model deployment handle; None loads both aliases in this replica."""
        from flightline import serving
        from flightline.config import get_settings

        self._settings = get_settings()
        serving.ensure_tables(self._settings)
        self._handles = models or {}
        self._local: dict[str, serving.AliasedModel] = {}
        self._followers = []
        if models is None:
            for alias in (serving.CHAMPION, serving.CHALLENGER):
                self._local[alias] = serving.AliasedModel(self._settings, alias)
                self._local[alias].refresh()
                self._followers.append(self._local[alias].follow(self._settings.serve_model_poll_s))
        self._retrieval = retrieval
        self._logger = serving.PredictionLogger(self._settings)
        self._policy = serving.DEFAULT_POLICY
        self._reader: Any = None
        self._reader_error: str | None = "not loaded yet"
        self._pool: Any = None
        self._policy_conn: Any = None
        self._start: asyncio.Future[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._router = serving.Router(
            self._settings,
            scorers={
                **{name: self._remote_scorer(handle) for name, handle in self._handles.items()},
                **{name: self._local_scorer(model) for name, model in self._local.items()},
            },
            read_features=self._read_features,
            policy=lambda: self._policy,
            logger=self._logger,
        )

    @staticmethod
    def _local_scorer(model: Any) -> Any:
        async def score(rows: list[list[float]]) -> tuple[list[float], str]:
            return await asyncio.to_thread(model.predict, rows)  # a thread, so the timeout can fire

        return score

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

    async def _started(self) -> None:
        """Open the feature pool, read policy and views once, start the poller: once per replica, in its loop.

        The start is a task of its own, shielded from the request that began it: a client that gives up
        (Serve then cancels its request) must not leave the replica half-started with every later request
        waiting. A start that failed is tried again by the next request.
        """
        if self._start is None or (self._start.done() and (self._start.cancelled() or self._start.exception())):
            self._start = asyncio.ensure_future(self._start_once())
        await asyncio.shield(self._start)

    async def _start_once(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        if self._pool is None:
            pool = AsyncConnectionPool(
                self._settings.postgres_dsn(self._settings.feast_db), min_size=1, max_size=4, open=False,
                kwargs={"autocommit": True},
            )
            await pool.open()
            self._pool = pool
        await self._poll_once()
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        """Keep the traffic policy and the Feast view definitions current (no redeploy needed)."""
        while True:
            await asyncio.sleep(self._settings.serve_policy_poll_s)
            await self._poll_once()

    async def _poll_once(self) -> None:
        import psycopg

        from flightline import serving
        from flightline.online_features import OnlineFeatureReader

        try:
            if self._reader is None:
                self._reader = await asyncio.to_thread(OnlineFeatureReader.from_settings, self._settings)
                self._reader_error = None
            if self._policy_conn is None or self._policy_conn.closed:
                self._policy_conn = await psycopg.AsyncConnection.connect(
                    self._settings.postgres_dsn(self._settings.warehouse_db), autocommit=True
                )
            self._policy = await serving.read_policy_async(self._policy_conn)
        except Exception as exc:  # noqa: BLE001 - keep the last good state; report it in status
            if self._reader is None:
                self._reader_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("serving poll failed: %s", exc)
            self._policy_conn = None

    async def _read_features(self, requests: list[Any]) -> list[Any]:
        if self._reader is None:
            raise HTTPException(503, f"feature definitions unavailable ({self._reader_error}); run `feast apply`")
        try:
            async with self._pool.connection(timeout=self._settings.serve_model_timeout_s) as conn:
                return await self._reader.read_async(conn, requests)
        except Exception as exc:  # noqa: BLE001 - the store being down is a flagged fallback, not a 500
            return self._reader.unavailable(requests, f"{type(exc).__name__}: {exc}"[:300])

    @api.post("/v1/predict/flight-delay", response_model=PredictionOut)
    async def predict(self, flight: FlightIn) -> PredictionOut:
        """Delay probability of one flight (15+ min late or cancelled), with the variant that answered."""
        await self._started()
        return (await self._router.predict([flight]))[0]

    @api.post("/v1/predict/flight-delay/batch", response_model=BatchOut)
    async def predict_batch(self, batch: BatchIn) -> BatchOut:
        """Many flights in one request (features read in one query, one model call per variant)."""
        await self._started()
        return BatchOut(predictions=await self._router.predict(batch.flights))

    @api.get("/v1/serving/status")
    async def serving_status(self) -> dict[str, Any]:
        await self._started()
        here = serve.get_replica_context().deployment
        models = {name: {**model.info(), "deployment": here} for name, model in self._local.items()}
        for name, handle in self._handles.items():
            try:
                models[name] = await handle.info.remote()
            except Exception as exc:  # noqa: BLE001 - report, do not fail the status page
                models[name] = {"error": str(exc)[:300]}
        return {
            "policy": self._policy.as_dict(),
            "models": models,
            "breakers": {name: b.as_dict() for name, b in self._router.breakers.items()},
            "features": {"ready": self._reader is not None, "error": self._reader_error},
            "prediction_log": {"written": self._logger.written, "dropped": self._logger.dropped},
        }

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

    def _rag(self) -> DeploymentHandle:
        if self._retrieval is None:
            raise HTTPException(404, "RAG is not mounted on this router (serve config args: rag: true)")
        return self._retrieval

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    async def check_health(self) -> None:
        """Unhealthy when the prediction log writer or the poller died (Serve restarts the replica)."""
        if not self._logger.alive:
            raise RuntimeError("prediction log writer stopped")
        if self._poller is not None and self._poller.done():
            raise RuntimeError("policy poller stopped")
        if not all(thread.is_alive() for thread in self._followers):
            raise RuntimeError("model alias follower stopped")


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
