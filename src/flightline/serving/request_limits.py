"""What the serving HTTP surface takes in and echoes back, bounded.

The router parses a request's JSON on its one event loop, so a body of any size stalled every other
caller: a 200 MB body held the loop for ~18 s and its 422 echoed the input back (1 GB). Bodies over their
route's limit now get a 413 before they are read, and a 422 echoes at most a short form of the input.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from flightline.rag.schemas import MAX_EMBEDDING_INPUT_CHARS, MAX_EMBEDDING_INPUTS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIB = 1024 * 1024
DEFAULT_BODY_LIMIT = 64 * 1024
"""Bytes of body for a route not named below: one flight, status pages."""
BODY_LIMITS: dict[str, int] = {
    # 1,000 flights at ~0.2 KB each; 8 MiB leaves room for whitespace and escaped routing keys
    "/v1/predict/flight-delay/batch": 8 * MIB,
    "/v1/rag/search": 1 * MIB,
    # the schema's largest request with every character escaped as JSON's 6-byte \uXXXX (Python's json.dumps
    # writes any non-ASCII text so), with its punctuation
    "/v1/embeddings": MAX_EMBEDDING_INPUTS * (MAX_EMBEDDING_INPUT_CHARS * 6 + 16) + 64 * 1024,
}
ECHO_CHARS = 200
"""Characters of an invalid string a 422 echoes; the rest is counted, not returned."""
ECHO_ITEMS = 20
"""Items of an invalid list or object a 422 echoes in full; a larger one is described."""


class BodyTooLargeError(Exception):
    """A body without Content-Length (chunked) grew past its route's limit while being read."""


class BodySizeLimit:
    """ASGI middleware: 413 with the limit for a body over its route's limit, before it is read.

    A Content-Length over the limit is refused at once; a chunked body is counted as it arrives.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")  # path includes the route prefix, if any
        limit = BODY_LIMITS.get(path[len(root):] if root and path.startswith(root) else path, DEFAULT_BODY_LIMIT)
        for name, value in scope["headers"]:
            if name == b"content-length":
                size = int(value) if value.isdigit() else 0  # the HTTP parser refuses a malformed one first
                if size > limit:
                    await _refuse(send, size, limit)
                    return
                await self.app(scope, receive, send)
                return
        await _ChunkedBody(limit).run(self.app, scope, receive, send)


class _ChunkedBody:
    """One chunked request, counted as it arrives. Past the limit, receive raises: FastAPI answers that with a
    400 ("error parsing the body"), which is replaced here by the 413; an app that lets the error through gets
    the 413 too."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0
        self.over = False
        self.refused = False

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.seen += len(message.get("body", b""))
                if self.seen > self.limit:
                    self.over = True
                    raise BodyTooLargeError
            return message

        async def send_unless_over(message: Message) -> None:
            if not self.over:
                await send(message)
            elif not self.refused:
                self.refused = True
                await _refuse(send, None, self.limit)

        try:
            await app(scope, receive_counted, send_unless_over)
        except BodyTooLargeError:
            if not self.refused:
                self.refused = True
                await _refuse(send, None, self.limit)


async def _refuse(send: Send, size: int | None, limit: int) -> None:
    import orjson

    got = "a chunked body past that" if size is None else f"{size} bytes"
    body = orjson.dumps({"detail": f"request body too large: this route takes at most {limit} bytes, got {got}"})
    # no `connection: close`: the server closed with the unread body in its socket, the reset that followed
    # could overtake the 413 (a client still sending got "peer closed connection" instead). Kept open, the
    # HTTP parser discards the rest of the body as it arrives, unparsed, and the client reads the 413.
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


def validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's 422 details, JSON-safe and short: each error's ``input`` as ``echo`` gives it, and NaN or
    Infinity anywhere as a string (a JSON response cannot hold them; the default handler failed with a 500)."""
    return [
        {key: echo(value) if key == "input" else _json_safe(value) for key, value in error.items()} for error in errors
    ]


def echo(value: Any) -> Any:
    """An invalid input as a 422 returns it: strings cut at ECHO_CHARS, large lists and objects described."""
    if isinstance(value, str):
        return value if len(value) <= ECHO_CHARS else f"{value[:ECHO_CHARS]}... ({len(value)} characters)"
    if isinstance(value, list | tuple):
        if len(value) > ECHO_ITEMS:
            return f"(a list of {len(value)} items)"
        return [echo(item) for item in value]
    if isinstance(value, dict):
        if len(value) > ECHO_ITEMS:
            return f"(an object of {len(value)} keys)"
        return {echo(key): echo(item) for key, item in value.items()}
    return _json_safe(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value
