"""The benchmark's baseline: a bare FastAPI app serving the champion with the router's feature read.

Same schema, same OnlineFeatureReader query, same model object path (AliasedModel + predict_rows) and
the same background prediction log, in one process without Ray: what the Ray Serve router is compared
against.

    uvicorn --factory benchmarks.bare_app:create_app --port 8099
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from flightline.schemas_serving import FlightIn


def create_app() -> FastAPI:
    from psycopg_pool import AsyncConnectionPool

    from flightline.config import get_settings
    from flightline.online_features import OnlineFeatureReader
    from flightline.serving import AliasedModel, PredictionLogger

    settings = get_settings()
    model = AliasedModel(settings, "champion")
    model.refresh()
    reader = OnlineFeatureReader.from_settings(settings)
    logger = PredictionLogger(settings)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        state["pool"] = AsyncConnectionPool(
            settings.postgres_dsn(settings.feast_db), min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await state["pool"].open()
        yield
        await state["pool"].close()

    app = FastAPI(title="bare baseline", lifespan=lifespan)

    @app.post("/v1/predict/flight-delay")
    async def predict(flight: FlightIn) -> dict[str, Any]:
        async with state["pool"].connection() as conn:
            served = (await reader.read_async(conn, [flight.to_request()]))[0]
        probabilities, version = model.predict([served.vector()])
        features = served.as_json()
        request_id = uuid.uuid4().hex
        logger.log({"request_id": request_id, "model_name": settings.model_name, "variant": "champion",
                    "model_version": version, "is_shadow": False, "request": flight.model_dump(mode="json"),
                    "features": features, "prediction": probabilities[0], "latency_ms": 0.0})
        return {"request_id": request_id, "delay_probability": probabilities[0], "model_version": version,
                "variant": "champion", "features": {k: v for k, v in features.items() if k != "values"}}

    return app
