"""The graph a LangGraph server runs (``langgraph dev``, LangGraph Studio, LangGraph Platform).

``langgraph.json`` at the repository root points at :func:`make_graph` (async: the models load in a
worker thread, off the server's event loop). It builds the default agent
once per process (Whisper base + tiny.en with the shipped reflector, as :meth:`SpeechHands.default`;
``$SPEECH_HANDS_SERVER_CONFIG`` names a configuration file to serve another assembly instead) and
compiles this graph WITHOUT a checkpointer: the server brings its own, and the routing graphs inside
inherit it. The input is plain JSON, so Studio shows a form for it (:class:`ServerInput`)::

    {"audio": "/data/meeting.flac"}                     # a path on the server's machine
    {"audio_b64": "<base64 of the file>", "question": "What is the speaker doing?"}

Figure::

    START --> load_audio --(30 s or less, or a question)--> route       (the routing graph, a subgraph)
                  |                                           |
                  +--(speech recognition over 30 s)--> route_long --+--> END
                                                      (the segmenting graph, a subgraph)

``load_audio`` decodes and validates the audio (a missing file, bad base64, audio that is not audio:
the run fails with :class:`InvalidInput`, a ``ValueError`` whose message (the server shows it) names
the :class:`~speech_hands.errors.AudioError` / ``ConfigurationError`` and what to fix), puts it in the agent's :class:`~speech_hands.audio.AudioStore` (where the
tools read it) and writes the :class:`~speech_hands.types.AudioRef` the routing graph starts from;
uploaded bytes are kept under ``$SPEECH_HANDS_HOME/uploads`` (default ``~/.cache/speech_hands``),
named by their sha256. The output (:class:`ServerOutput`) is the routing state's answer, action,
candidates, decisions, rewrites and notes (``results``: the segments of long audio). Per-run settings
go in the run's ``context`` (:class:`~speech_hands.graphs.context.RunContext`: ``n_best``,
``max_rewrites``, ``interrupt_on``, ...); stream ``custom`` with ``stream_subgraphs=True`` for the
typed events of :mod:`speech_hands.graphs.events`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (JSON schemas)

from speech_hands.agent.speech_hands import SpeechHands
from speech_hands.errors import ConfigurationError, SpeechHandsError
from speech_hands.graphs.context import RunContext
from speech_hands.graphs.segments import SegmentedGraph, SegmentSettings, fresh_segmented_input
from speech_hands.graphs.state import extend, fresh_input

log = logging.getLogger(__name__)

__all__ = ["ServerInput", "ServerOutput", "build_server_graph", "make_graph", "server_graph"]


class ServerInput(BaseModel):
    """One run's input: an audio file by path or as base64, and an optional question."""

    model_config = ConfigDict(extra="forbid")

    audio: str | None = Field(default=None, description="path of an audio file on the server's machine")
    audio_b64: str | None = Field(
        default=None, description="the audio file's bytes as base64 (a data: URL prefix is allowed)"
    )
    question: str | None = Field(default=None, description="a question about the audio (audio QA agents only)")
    utterance_id: str | None = Field(default=None, description="an id for the input (default: the file name)")
    prompt: str | None = Field(
        default=None, description="text said before the audio, for the speech recognisers that take a prompt (Whisper)"
    )


class InvalidInput(ValueError):
    """The run's input cannot be routed (a ``ValueError``, so the server shows its message to the client)."""


class ServerOutput(TypedDict, total=False):
    """What a run returns: the routing state's result part."""

    answer: str | None
    action: str | None
    audio: dict[str, Any]
    outputs: list[dict[str, Any]]
    reflections: list[dict[str, Any]]
    rewrites: list[dict[str, Any]]
    results: list[dict[str, Any]]
    notes: list[str]
    skipped_reason: str | None


class ServerState(TypedDict, total=False):
    """The routing state and the segmenting state's keys, plus the input's own."""

    audio: Any  # the input's path (a string), then the AudioRef ``load_audio`` writes
    audio_b64: str | None
    question: str | None
    utterance_id: str | None
    prompt: str | None
    long: bool
    outputs: Annotated[list[dict[str, Any]], extend]
    samples: Annotated[list[dict[str, Any]], extend]
    reflections: Annotated[list[dict[str, Any]], extend]
    votes: Annotated[list[dict[str, Any]], extend]
    rewrites: Annotated[list[dict[str, Any]], extend]
    timings: Annotated[list[dict[str, Any]], extend]
    notes: Annotated[list[str], extend]
    segments: Annotated[list[dict[str, Any]], extend]
    replaced: Annotated[list[int], extend]
    reviewed: Annotated[list[int], extend]
    results: Annotated[list[dict[str, Any]], extend]
    round: int
    answer: str | None
    action: str | None
    route: str | None
    skipped_reason: str | None
    rewrite_error: str | None


def uploads_dir() -> Path:
    home = os.environ.get("SPEECH_HANDS_HOME") or os.environ.get("SPEECH_HANDS_CACHE")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "speech_hands") / "uploads"


def decode_upload(data: str) -> Path:
    """Base64 audio bytes as a file under :func:`uploads_dir` (named by sha256); a clear error otherwise."""
    text = data.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(
            f"audio_b64 is not valid base64 ({exc}); send the file's bytes base64-encoded"
        ) from exc
    if not raw:
        raise ConfigurationError("audio_b64 is empty; send the audio file's bytes base64-encoded")
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(raw).hexdigest()}.audio"
    if not path.exists():
        path.write_bytes(raw)
    return path


def build_server_graph(agent: SpeechHands) -> StateGraph:
    """The server's graph over ``agent``'s backends and audio store (see the module docstring)."""
    routing = agent.routing.build().compile(cache=agent.cache)  # no checkpointer: the server's is inherited
    segmenting = SegmentSettings(
        max_segment_s=agent.config.max_segment_s,
        segment_concurrency=agent.config.segment_concurrency,
        min_words_per_speech_s=agent.config.min_words_per_speech_s,
    )
    inner = max(len(agent.tools), agent.config.k_samples, 4)
    segmented = SegmentedGraph(routing, agent.store, segmenting, inner_concurrency=inner).build().compile()

    def load_audio(state: ServerState) -> dict[str, Any]:
        try:
            return _load(state)
        except SpeechHandsError as exc:  # the message says what to fix: show it to the client
            raise InvalidInput(f"{type(exc).__name__}: {exc}") from exc

    def _load(state: ServerState) -> dict[str, Any]:
        path_value = state.get("audio") if isinstance(state.get("audio"), str) else None
        b64 = state.get("audio_b64")
        if (path_value is None) == (b64 is None):
            raise ConfigurationError(
                'give exactly one of {"audio": "<path on the server>"} and {"audio_b64": "<base64 bytes>"}'
            )
        request = ServerInput(
            audio=path_value,
            audio_b64=b64,
            question=state.get("question"),
            utterance_id=state.get("utterance_id"),
            prompt=state.get("prompt"),
        )
        source = Path(request.audio) if request.audio is not None else decode_upload(request.audio_b64 or "")
        loaded = agent._prepare(source, request.question, request.utterance_id)
        ref = loaded.ref.model_dump(mode="json")
        long = agent.segmented(loaded, request.question)
        prompt = request.prompt
        fresh: dict[str, Any] = {**fresh_segmented_input(ref, prompt), **fresh_input(ref, request.question, prompt)}
        return {**fresh, "audio_b64": None, "long": long}

    def which(state: ServerState) -> str:
        return "route_long" if state.get("long") else "route"

    graph = StateGraph(ServerState, input_schema=ServerInput, output_schema=ServerOutput, context_schema=RunContext)
    graph.add_node("load_audio", load_audio)
    graph.add_node("route", routing)
    graph.add_node("route_long", segmented)
    graph.add_edge(START, "load_audio")
    graph.add_conditional_edges("load_audio", which, ["route", "route_long"])
    graph.add_edge("route", END)
    graph.add_edge("route_long", END)
    return graph


@functools.lru_cache(maxsize=1)
def served_agent() -> SpeechHands:
    """The agent the server runs, built once per process: the default agent, or the assembly the file
    ``$SPEECH_HANDS_SERVER_CONFIG`` describes. Its own trace database is not used (the server keeps the
    checkpoints), so it is kept in memory."""
    config_file = os.environ.get("SPEECH_HANDS_SERVER_CONFIG")
    if config_file:
        from speech_hands.assembly import build_parts

        parts = build_parts(config_file)
        if parts.agent.trace_db not in (None, ":memory:"):
            from speech_hands.checkpointing import redact

            log.warning(
                "trace_db %s of %s is not used: the LangGraph server keeps the checkpoints in its own store "
                "(langgraph dev: in memory; a built LangGraph server image: its Postgres, DATABASE_URI)",
                redact(parts.agent.trace_db),
                config_file,
            )
        agent_config = parts.agent.model_copy(update={"trace_db": ":memory:"})
        return SpeechHands(parts.omni, parts.external, config=agent_config)
    return SpeechHands.default(trace_db=":memory:")


def server_graph() -> CompiledStateGraph:
    """The compiled server graph over :func:`served_agent`, without a checkpointer (the server's own is
    used)."""
    agent = served_agent()
    return build_server_graph(agent).compile(cache=agent.cache)


async def make_graph() -> CompiledStateGraph:
    """:func:`server_graph`, built in a worker thread (loading the models blocks; the server's event loop
    must not): ``langgraph.json`` points here. The server awaits it for every run; the agent is built once."""
    return await asyncio.to_thread(server_graph)
