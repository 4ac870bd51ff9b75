"""The FastAPI app: :func:`create_app` over one agent (loaded before the server starts, closed at
shutdown through the lifespan).

Routes (``docs/serve.md``)::

    GET  /healthz                    ok / degraded, the model, whether its weights are loaded, each tool's availability
    GET  /v1/models                  OpenAI's model list: the agent's name
    POST /v1/audio/transcriptions    OpenAI-compatible (multipart: file, model, prompt, language, response_format)
    POST /v1/process                 the Speech-Hands contract (JSON with audio_b64, or multipart with file)
    GET  /v1/threads/{id}/trace      the decision history of one run (thread_id of a response); every worker
                                     on the same checkpointer (a shared Postgres) answers for every run

Every run goes through the :class:`~speech_hands.service.limits.ConcurrencyGate` (503 + Retry-After
when full) and runs in a worker thread (``anyio.to_thread``), off the event loop. Uploads are decoded
in memory (:func:`speech_hands.audio.load_audio_bytes`); no audio is written to a file. Errors use
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.

Usage::

    app = create_app(SpeechHands.default().load(), ServiceSettings(max_concurrent=1), owns_agent=True)
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from speech_hands.errors import AudioError, AudioTooLong, ConfigurationError, SpeechHandsError
from speech_hands.service.limits import BodySizeLimit, ConcurrencyGate, ServiceBusy, ServiceSettings, error_body

try:
    import anyio
    import anyio.to_thread
    from fastapi import Depends, FastAPI, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SpeechHandsError(
        f"the HTTP service needs FastAPI ({exc}); install it with: pip install 'speech-hands[serve]'"
    ) from exc

if TYPE_CHECKING:
    from speech_hands.agent import SpeechHands
    from speech_hands.audio import AudioInput
    from speech_hands.types import AgentResult

__all__ = ["ApiError", "create_app"]


class ApiError(Exception):
    """An error answered in OpenAI's shape with ``status``."""

    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None, param=None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def _error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None, **headers):
    return JSONResponse(error_body(message, type_, code, param), status_code=status, headers=headers or None)


def _audio_error(exc: AudioError) -> ApiError:
    if isinstance(exc, AudioTooLong):
        return ApiError(413, str(exc), code="audio_too_long", param="file")
    return ApiError(400, f"{exc} (send a WAV, FLAC, MP3, Ogg or M4A file)", code="invalid_audio", param="file")


#: uploads decoded at the same time (decoding is short and CPU-bound; runs are gated separately)
DECODERS = 2


class Service:
    """The app's state: the agent, the caller-N-best variant of it, the gate."""

    def __init__(self, agent: SpeechHands, settings: ServiceSettings) -> None:
        from speech_hands.agent import SpeechHands
        from speech_hands.service.nbest import RequestAnswers, RequestNBest

        self.agent = agent
        self.settings = settings
        self.gate = ConcurrencyGate(settings.max_concurrent, settings.max_queue, settings.retry_after_s)
        self.max_audio_s = min(settings.max_audio_s, agent.config.max_audio_s)
        self.loaded = False
        self._decoders: anyio.CapacityLimiter | None = None
        # the same backends and checkpointer plus one tool that answers with the caller's list
        self.nbest = RequestAnswers() if agent.omni.kind != "asr" else RequestNBest()
        self.with_nbest = SpeechHands(
            agent.omni,
            [*agent.external, self.nbest],
            config=agent.config,
            checkpointer=agent.checkpointer,
            availability=agent.availability,  # failover sees the calls of both; the caller's list is not tracked
        )

    def decode(self, data: bytes, name: str):
        from speech_hands.audio import load_audio_bytes

        try:
            return load_audio_bytes(data, utterance_id=uuid.uuid4().hex, name=name, max_duration_s=self.max_audio_s)
        except AudioError as exc:
            raise _audio_error(exc) from exc

    def run(
        self, audio: AudioInput, question: str | None, nbest: list[str] | None, prompt: str | None = None
    ) -> AgentResult:
        """Route one decoded input (called in a worker thread); ``prompt``: text said before the audio,
        for the speech recognisers that take one (OpenAI's ``prompt`` field)."""
        from speech_hands.audio import SEGMENTED_OVER_S

        try:
            if not nbest:
                return self.agent.invoke(audio, question, prompt=prompt)
            if audio.ref.duration_s > SEGMENTED_OVER_S and question is None:
                raise ApiError(
                    400,
                    f"external_nbest covers one utterance; this audio lasts {audio.ref.duration_s:.0f} s, over "
                    f"{SEGMENTED_OVER_S:.0f} s (long audio is routed segment by segment): send it without external_nbest",
                    param="external_nbest",
                )
            with self.nbest.given(audio.id, nbest):
                return self.with_nbest.invoke(audio, question, prompt=prompt)
        except (ConfigurationError, AudioError) as exc:
            raise _audio_error(exc) if isinstance(exc, AudioError) else ApiError(400, str(exc)) from exc

    async def routed(
        self, data: bytes, name: str, question: str | None = None, nbest=None, prompt: str | None = None
    ) -> AgentResult:
        """Decode, then wait for a run slot and route. Decoding comes first, :data:`DECODERS` at a time, so
        a corrupt or too-long upload gets its 400 / 413 at once instead of queueing behind runs; only audio
        that can run takes a place in the gate."""
        if self._decoders is None:  # made on the event loop that uses it
            self._decoders = anyio.CapacityLimiter(DECODERS)
        audio = await anyio.to_thread.run_sync(self.decode, data, name, limiter=self._decoders)
        async with self.gate.admit():
            return await anyio.to_thread.run_sync(self.run, audio, question, nbest, prompt)


def _b64(text: str) -> bytes:
    text = text.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"audio_b64 is not valid base64 ({exc})", param="audio_b64") from exc


def create_app(agent: SpeechHands, settings: ServiceSettings | None = None, *, owns_agent: bool = False) -> FastAPI:
    """The service over ``agent`` (its models should be loaded: ``agent.load()``); ``owns_agent``: close
    it when the app shuts down."""
    from speech_hands.service.openai_format import process_response, transcription_body
    from speech_hands.service.schemas import RESPONSE_FORMATS, Health, ModelCard, ModelList, ProcessRequest

    settings = settings or ServiceSettings()
    service = Service(agent, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service
        await anyio.to_thread.run_sync(agent.load)  # every model's weights now, not on the first request
        service.loaded = True
        try:
            yield
        finally:
            if owns_agent:
                await anyio.to_thread.run_sync(agent.close)

    app = FastAPI(title="speech-hands", summary="Speech-Hands routing over HTTP", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    bearer = HTTPBearer(auto_error=False)

    async def require_key(request: Request) -> None:
        """The auth dependency of every /v1 route (``HTTPBearer`` reads the header)."""
        if settings.api_key is None:
            return
        credentials: HTTPAuthorizationCredentials | None = await bearer(request)
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>' with the server's --api-key",
                code="invalid_api_key",
            )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return _error(exc.status, exc.message, exc.type, exc.code, exc.param, **headers)

    @app.exception_handler(ServiceBusy)
    async def _busy(request: Request, exc: ServiceBusy) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc), "server_error", "server_busy"),
            status_code=503,
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query")]
        param = ".".join(loc) or None
        message = first.get("msg", "invalid request")
        if first.get("type") == "missing":
            message = f"the {param or 'required'} field is missing" + (
                " (send the audio as multipart form field 'file')" if param == "file" else ""
            )
        return _error(400, message, "invalid_request_error", first.get("type"), param)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        health = agent.health()
        return Health(
            status=health.status,
            model=settings.model_name,
            models_loaded=service.loaded,
            tools=[t.name for t in agent.tools],
            in_flight=service.gate.admitted,
            tool_status=health.tools,
            unavailable=health.unavailable,
        )

    @app.get("/v1/models", response_model=ModelList, dependencies=[Depends(require_key)])
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=settings.model_name)])

    @app.get("/v1/threads/{thread_id}/trace", dependencies=[Depends(require_key)])
    async def thread_trace(thread_id: str) -> JSONResponse:
        try:
            trace = await anyio.to_thread.run_sync(agent.trace, thread_id)
        except SpeechHandsError as exc:
            raise ApiError(404, str(exc), code="thread_not_found", param="thread_id") from exc
        return JSONResponse(trace.model_dump(mode="json"))

    @app.post("/v1/audio/transcriptions", dependencies=[Depends(require_key)])
    async def transcriptions(
        file: Annotated[UploadFile, Form()],
        model: Annotated[str, Form()] = settings.model_name,
        prompt: Annotated[str | None, Form()] = None,
        language: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float | None, Form()] = None,
    ) -> Any:
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"response_format {response_format!r} is not supported; use one of {', '.join(RESPONSE_FORMATS)}",
                param="response_format",
            )
        data = await file.read()
        await file.close()
        result = await service.routed(data, file.filename or "the upload", prompt=prompt or None)
        body, media_type = transcription_body(result, response_format, language=language or "en")
        if isinstance(body, str):
            return PlainTextResponse(body, media_type=media_type)
        return JSONResponse(body.model_dump(mode="json"), media_type=media_type)

    @app.post("/v1/process", dependencies=[Depends(require_key)])
    async def process(request: Request) -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                body = ProcessRequest.model_validate_json(await request.body())
            except ValueError as exc:
                raise ApiError(400, f"not a valid /v1/process request: {exc}") from exc
            data, name = _b64(body.audio_b64), "audio_b64"
        elif kind == "multipart/form-data":
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(
                    400, "the file field is missing (send the audio as multipart field 'file')", param="file"
                )
            data, name = await upload.read(), upload.filename or "the upload"
            await upload.close()
            fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
            if "external_nbest" in fields:
                fields["external_nbest"] = _nbest_field(form.getlist("external_nbest"))
            try:
                body = ProcessRequest.model_validate({**fields, "audio_b64": ""})
            except ValueError as exc:
                raise ApiError(400, f"not a valid /v1/process request: {exc}") from exc
        else:
            raise ApiError(
                415,
                f"unsupported content type {kind or '(none)'!r}: send application/json (audio_b64) or "
                "multipart/form-data (file)",
                code="unsupported_media_type",
            )
        if body.task == "qa" and not body.question:
            raise ApiError(400, "task 'qa' needs a question", param="question")
        if body.task == "transcribe" and body.question:
            raise ApiError(400, "a question goes with task 'qa'; task 'transcribe' takes none", param="question")
        nbest = body.external_nbest or ([body.external_prediction] if body.external_prediction else None)
        result = await service.routed(data, name, body.question, nbest)
        return JSONResponse(process_response(result).model_dump(mode="json"))

    return app


def _nbest_field(values: list[Any]) -> list[str]:
    """``external_nbest`` from a form: repeated fields, or one field holding a JSON list."""
    texts = [v for v in values if isinstance(v, str)]
    if len(texts) == 1 and texts[0].lstrip().startswith("["):
        try:
            parsed = json.loads(texts[0])
        except ValueError as exc:
            raise ApiError(
                400, f"external_nbest is not a JSON list of strings ({exc})", param="external_nbest"
            ) from exc
        if not isinstance(parsed, list) or not all(isinstance(t, str) for t in parsed):
            raise ApiError(400, "external_nbest must be a list of strings", param="external_nbest")
        return parsed
    return texts
