"""The service's limits: its settings, the request body size limit (an ASGI middleware) and the
concurrency gate (at most ``max_concurrent`` runs, ``max_queue`` waiting, the rest refused at once).

Usage::

    settings = ServiceSettings(max_upload_mb=25, max_concurrent=1, max_queue=4)
    gate = ConcurrencyGate(settings.max_concurrent, settings.max_queue, settings.retry_after_s)
    async with gate.admit():      # raises ServiceBusy (503 + Retry-After) when full, never waits for room
        ...

Nothing here imports FastAPI: the middleware is plain ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BodySizeLimit", "ConcurrencyGate", "ServiceBusy", "ServiceSettings"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ServiceSettings(BaseModel):
    """How the service admits requests (``speech-hands serve`` options of the same names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field(default="speech-hands", description="the model id /v1/models lists")
    api_key: str | None = Field(default=None, description="bearer token every /v1 request must carry (None: open)")
    max_upload_mb: float = Field(default=25.0, gt=0, description="largest request body, MiB (OpenAI's limit: 25)")
    max_audio_s: float = Field(default=600.0, gt=0, description="longest accepted audio, seconds")
    max_concurrent: int = Field(default=1, ge=1, description="agent runs at once (one process, one agent)")
    max_queue: int = Field(default=8, ge=0, description="requests waiting for a run slot; more get 503")
    retry_after_s: int = Field(default=1, ge=0, description="the Retry-After of a 503")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class ServiceBusy(Exception):
    """Every run slot and queue place is taken (answered 503 with ``Retry-After``)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("the server is busy: every run slot and queue place is taken; retry shortly")
        self.retry_after_s = retry_after_s


class ConcurrencyGate:
    """At most ``max_concurrent`` holders at once and ``max_queue`` waiting; :meth:`admit` refuses
    (:class:`ServiceBusy`) instead of waiting when both are full. Used from one event loop only."""

    def __init__(self, max_concurrent: int, max_queue: int, retry_after_s: int = 1) -> None:
        self.capacity = max_concurrent + max_queue
        self.retry_after_s = retry_after_s
        self.admitted = 0  # running + waiting
        self._slots = asyncio.Semaphore(max_concurrent)

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self.admitted >= self.capacity:
            raise ServiceBusy(self.retry_after_s)
        self.admitted += 1
        try:
            async with self._slots:
                yield
        finally:
            self.admitted -= 1


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before the app sees it. A declared
    ``Content-Length`` over the limit is refused unread; otherwise the body is read (up to the limit, in
    memory) and replayed to the app."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        mib = self.max_bytes / (1024 * 1024)
        body = error_body(
            f"the request body is over the limit of {mib:g} MiB; send a shorter or compressed recording "
            "(FLAC, Opus) or raise --max-upload-mb",
            "invalid_request_error",
            "request_too_large",
        )
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
