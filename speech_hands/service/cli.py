"""``speech-hands serve``: the HTTP service (:mod:`speech_hands.service.app`) under uvicorn.

The agent is assembled before the server starts (``--config FILE``, ``--agent MODULE:FUNCTION`` for one
made by your own code (:mod:`speech_hands.service.factory`), else the embedded default), so a
bad configuration or a port in use ends the command with exit status 2 and one ``error:`` line, before
any request. Ctrl-C / SIGTERM stop the server; the agent is closed on the way out.

Usage::

    speech-hands serve --port 8000 --api-key secret --max-concurrent 1 --max-queue 8
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import typer

from speech_hands.checkpointing import close_checkpointer
from speech_hands.cli_options import CheckpointerOption
from speech_hands.errors import ConfigurationError, SpeechHandsError

__all__ = ["register"]


def _check_port(host: str, port: int) -> None:
    """Fail now, with the fix, when ``host:port`` cannot be bound (in use, no such address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SpeechHandsError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port"
            ) from exc


def _agent(config: Path | None, trace_db: str | None, factory: str | None = None):
    """The agent to serve: built by the user's ``--agent`` factory, or from ``--config`` / the default.
    The checkpointer of the latter (``--checkpointer``, else the configuration's ``trace_db``) is opened
    first: a bad or unreachable database fails before any model loads."""
    from speech_hands.agent import SpeechHands
    from speech_hands.cli_options import open_for_command

    if factory is not None:
        from speech_hands.service.factory import agent_from_factory

        return agent_from_factory(factory, trace_db=trace_db)
    if config is None:
        location, saver = open_for_command(trace_db)
        return SpeechHands.default(trace_db=location, checkpointer=saver)
    from speech_hands.assembly import build_parts, read_config

    location, saver = open_for_command(trace_db or read_config(config)[0].agent.trace_db)
    try:
        parts = build_parts(config)
    except BaseException:
        close_checkpointer(saver)
        raise
    settings = parts.agent.model_copy(update={"trace_db": location})
    return SpeechHands(parts.omni, parts.external, config=settings, checkpointer=saver)


def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind (default: this machine only)"),
    port: int = typer.Option(8000, help="port"),
    config: Path | None = typer.Option(None, "--config", help="agent configuration file (default: the embedded one)"),
    agent_factory: str | None = typer.Option(
        None,
        "--agent",
        help="MODULE:FUNCTION or FILE.py:FUNCTION returning a SpeechHands (custom backends; instead of --config)",
    ),
    trace_db: str | None = CheckpointerOption,
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="SPEECH_HANDS_API_KEY", help="require 'Authorization: Bearer KEY' on /v1"
    ),
    model_name: str = typer.Option("speech-hands", "--model-name", help="the model id /v1/models lists"),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", help="largest request body, MiB (413 above)"),
    max_audio_s: float = typer.Option(600.0, "--max-audio-s", help="longest accepted audio, seconds (413 above)"),
    max_concurrent: int = typer.Option(1, "--max-concurrent", help="agent runs at once"),
    max_queue: int = typer.Option(8, "--max-queue", help="requests waiting for a run; more get 503 + Retry-After"),
    retry_after: int = typer.Option(1, "--retry-after", help="seconds a 503 asks the client to wait"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level"),
) -> None:
    """Serve the agent over HTTP: OpenAI-compatible POST /v1/audio/transcriptions, the Speech-Hands
    POST /v1/process, GET /v1/models and GET /healthz (docs/serve.md)."""
    try:
        import uvicorn

        from speech_hands.service.app import create_app
        from speech_hands.service.limits import ServiceSettings
    except ImportError as exc:
        raise SpeechHandsError(
            f"`speech-hands serve` needs FastAPI and uvicorn ({exc}); pip install 'speech-hands[serve]'"
        ) from exc
    try:
        settings = ServiceSettings(
            model_name=model_name,
            api_key=api_key or None,
            max_upload_mb=max_upload_mb,
            max_audio_s=max_audio_s,
            max_concurrent=max_concurrent,
            max_queue=max_queue,
            retry_after_s=retry_after,
        )
    except ValueError as exc:
        raise ConfigurationError(f"bad serve option: {exc}") from exc
    if config is not None and agent_factory is not None:
        raise ConfigurationError("give --config or --agent, not both")
    if config is not None and not config.is_file():
        raise ConfigurationError(f"configuration file not found: {config}")
    _check_port(host, port)
    agent = _agent(config, trace_db, agent_factory)
    app = create_app(agent, settings, owns_agent=True)
    typer.echo(f"speech-hands serve: http://{host}:{port}/v1 (model {model_name!r}; pid {os.getpid()})")
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
