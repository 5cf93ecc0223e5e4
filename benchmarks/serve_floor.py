"""Serve's own cost per request: the router's HTTP surface with no work behind it.

The same FastAPI stack as the router (a FlightIn validated, a PredictionOut returned through
``response_model``), but the answer is a constant: no feature read, no model, no prediction log. Served by
Ray Serve (an application beside the platform's, one replica with the router's settings) and by uvicorn
alone, its ratio is the most Serve can leave of a bare app on this machine, whatever the endpoint does;
``bench_serving.py`` measures it in the same run as the router (``--floor-clients``).

    uvicorn --factory benchmarks.serve_floor:create_app     (the answer's JSON in SERVE_FLOOR_RESPONSE)
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from flightline.serving.schemas import FlightIn, PredictionOut

RESPONSE_ENV = "SERVE_FLOOR_RESPONSE"


def floor_api(response: dict[str, Any]) -> FastAPI:
    """``response``: a router answer (the benchmark's flight), returned as it is to every request."""
    answer = PredictionOut.model_validate(response)
    api = FastAPI(title="serve floor")

    @api.post("/v1/predict/flight-delay", response_model=PredictionOut)
    async def predict(flight: FlightIn) -> PredictionOut:
        return answer

    return api


def build_app(args: dict[str, Any]) -> Application:
    """Serve config builder: ``args: {response: {...}}``; deployment ``FloorRouter``."""

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32)
    @serve.ingress(floor_api(args["response"]))
    class FloorRouter:
        pass

    return FloorRouter.bind()


def create_app() -> FastAPI:
    """The bare baseline (uvicorn ``--factory``)."""
    return floor_api(json.loads(os.environ[RESPONSE_ENV]))
