"""Request limits of the serving HTTP surface: what a 422 echoes, and body limits that hold the schemas."""

from __future__ import annotations

import json

from flightline.rag.schemas import MAX_EMBEDDING_INPUT_CHARS, MAX_EMBEDDING_INPUTS, EmbeddingRequest
from flightline.serving.request_limits import BODY_LIMITS, ECHO_CHARS, echo, validation_errors


def test_echo_keeps_small_inputs_and_shortens_large_ones() -> None:
    small = {"carrier": "UA", "flight_number": 12, "legs": [1, 2]}
    assert echo(small) == small
    assert echo("x" * (ECHO_CHARS + 5)) == f"{'x' * ECHO_CHARS}... ({ECHO_CHARS + 5} characters)"
    assert echo(list(range(21))) == "(a list of 21 items)"
    assert echo({str(k): k for k in range(21)}) == "(an object of 21 keys)"
    assert echo({"tail": ["y" * 500]}) == {"tail": [f"{'y' * ECHO_CHARS}... (500 characters)"]}


def test_validation_errors_write_nan_and_infinity_as_strings() -> None:
    errors = [{"loc": ("body", "x"), "input": float("nan"), "ctx": {"limit": float("inf")}}]
    assert json.dumps(validation_errors(errors), allow_nan=False) == (
        '[{"loc": ["body", "x"], "input": "nan", "ctx": {"limit": "inf"}}]'
    )


def test_the_embeddings_limit_holds_the_schemas_largest_request_as_json_dumps_writes_it() -> None:
    text = "\u20ac" * MAX_EMBEDDING_INPUT_CHARS  # json.dumps escapes each to 6 bytes (\u20ac)
    body = json.dumps({"input": [text] * MAX_EMBEDDING_INPUTS, "model": "m" * 200}).encode()
    assert EmbeddingRequest.model_validate_json(body)
    assert len(body) <= BODY_LIMITS["/v1/embeddings"]


def test_a_route_prefix_keeps_each_routes_limit() -> None:
    """Under a Serve route prefix (``/replicas``) the path includes it; the batch route kept only 64 KiB."""
    import asyncio

    from flightline.serving.request_limits import DEFAULT_BODY_LIMIT, BodySizeLimit

    answered: list[int] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        answered.append(200)

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            answered.append(int(message["status"]))

    size = str(DEFAULT_BODY_LIMIT + 1).encode()
    for path, root in (("/replicas/v1/predict/flight-delay/batch", "/replicas"), ("/v1/predict/flight-delay", "")):
        scope = {"type": "http", "path": path, "root_path": root, "headers": [(b"content-length", size)]}
        asyncio.run(BodySizeLimit(app)(scope, None, send))
    assert answered == [200, 413]
