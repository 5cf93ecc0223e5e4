"""RetrievalService: the embedding model and a Postgres pool behind one Ray Serve deployment.

The router calls it through a DeploymentHandle:
``await handle.search.remote(payload)`` and ``await handle.embeddings.remote(payload)``, with JSON
payloads. Logic lives in ``flightline.rag.retrieval`` and ``flightline.rag.embeddings``; this class only holds
the loaded model and connections so that each request skips the ~1 s model load and the connect.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

STORE_WAIT_S = 5.0
"""Longest a search waits for a PostgreSQL connection before it is answered 503."""


class RetrievalServiceArgs(BaseModel):
    """Builder arguments (serve config ``args``)."""

    pool_size: int = Field(default=2, ge=1, le=32, description="Postgres connections per replica")
    num_cpus: float = Field(default=0.5, gt=0, description="Ray CPUs per replica (fractional on 2 cores)")
    max_ongoing_requests: int = Field(default=8, ge=1)
    env: dict[str, str] = Field(default_factory=dict, description="FLIGHTLINE_* for the replica processes")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class RetrievalService:
    def __init__(self, pool_size: int = 2) -> None:
        from psycopg_pool import ConnectionPool

        from flightline.platform.config import get_settings
        from flightline.rag.embeddings import get_embedder

        self._settings = get_settings()
        self._embedder = get_embedder(self._settings)
        # check: a connection that a PostgreSQL restart closed is replaced before a search gets it.
        # statement_timeout: without it a search blocked by a lock would hold a slot of this replica and one
        # of the router's for as long as the lock is held (PostgreSQL's default is no timeout)
        timeout_ms = round(self._settings.rag_search_timeout_s * 1000)
        self._pool = ConnectionPool(
            self._settings.postgres_dsn(self._settings.warehouse_db), min_size=1, max_size=pool_size, open=True,
            check=ConnectionPool.check_connection, kwargs={"options": f"-c statement_timeout={timeout_ms}"},
        )

    def search(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/rag/search``; raises NotFoundError for an unknown collection, ServiceError when the
        document store does not answer (the router's 503): a search waited the pool's 30 s, then was a 500."""
        import psycopg
        from psycopg_pool import PoolTimeout

        from flightline.platform.errors import ServiceError
        from flightline.rag import retrieval
        from flightline.rag.schemas import SearchRequest

        request = SearchRequest.model_validate(payload)
        try:
            with self._pool.connection(timeout=STORE_WAIT_S) as conn:
                response = retrieval.search(request, settings=self._settings, embedder=self._embedder, conn=conn)
        except PoolTimeout as exc:
            raise ServiceError(
                "postgres", f"no document-store connection within {STORE_WAIT_S:g} s (PostgreSQL down or every "
                "connection busy); try again shortly"
            ) from exc
        except psycopg.errors.QueryCanceled as exc:
            raise ServiceError(
                "postgres", f"the document store did not answer the search within "
                f"{self._settings.rag_search_timeout_s:g} s (a lock or an overloaded database); try again shortly"
            ) from exc
        except psycopg.OperationalError as exc:
            raise ServiceError("postgres", f"the document store failed the search ({exc}); try again shortly") from exc
        return response.model_dump()

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/embeddings`` (OpenAI shape); raises NotFoundError for an unknown model."""
        from flightline.rag.embeddings import embed_openai
        from flightline.rag.schemas import EmbeddingRequest

        return embed_openai(EmbeddingRequest.model_validate(payload), embedder=self._embedder).model_dump()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()


def build_retrieval_service(args: dict[str, Any]) -> Application:
    """The RetrievalService application, for the router to bind or ``serve run`` to start."""
    parsed = RetrievalServiceArgs.model_validate(args)
    options: dict[str, Any] = {"num_cpus": parsed.num_cpus}
    if parsed.env:
        options["runtime_env"] = {"env_vars": parsed.env}
    return RetrievalService.options(ray_actor_options=options, max_ongoing_requests=parsed.max_ongoing_requests).bind(
        pool_size=parsed.pool_size
    )
