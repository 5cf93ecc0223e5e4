"""A minimal HTTP ingress for RetrievalService: POST /v1/embeddings and POST /v1/rag/search.

Request bodies are validated by flightline's pydantic schemas (422 with the reason); an unknown
collection or embedding model answers 404. The platform router (issue 4) mounts RetrievalService
itself; this app serves RAG alone and is what the HTTP tests run against.

    serve run ray_serve.rag_app:build_app
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from flightline.errors import FlightlineConfigError, NotFoundError
from flightline.schemas_rag import EmbeddingRequest, EmbeddingResponse, SearchRequest, SearchResponse
from ray_serve.rag import build_retrieval_service

api = FastAPI(title="flightline RAG", version="1")


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
@serve.ingress(api)
class RagIngress:
    def __init__(self, service: DeploymentHandle) -> None:
        self._service = service

    @api.post("/v1/embeddings")
    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        try:
            return EmbeddingResponse.model_validate(await self._service.embeddings.remote(request.model_dump()))
        except NotFoundError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc

    @api.post("/v1/rag/search")
    async def search(self, request: SearchRequest) -> SearchResponse:
        try:
            return SearchResponse.model_validate(await self._service.search.remote(request.model_dump()))
        except NotFoundError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except FlightlineConfigError as exc:  # collection embedded with another model
            raise HTTPException(status_code=409, detail=str(exc)) from exc

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}


def build_app(args: dict[str, Any]) -> Application:
    """Ingress plus RetrievalService; ``args`` are RetrievalServiceArgs (pool size, CPUs, env)."""
    return RagIngress.bind(build_retrieval_service(args))
