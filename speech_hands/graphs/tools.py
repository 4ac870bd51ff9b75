"""Perception backends as langchain-core tools.

Each perception source (the omni model's own prediction, every external ASR / caption tool) becomes a
``StructuredTool`` with a pydantic argument schema, so the same objects can be handed to any
LangChain-compatible agent, listed, described, and invoked with JSON. The tool takes an
:class:`~speech_hands.types.AudioRef` (never raw audio), fetches the samples from the
:class:`~speech_hands.audio.AudioStore`, runs the backend and returns a
:class:`~speech_hands.types.ToolOutput` as JSON-ready data.

Candidates that cannot be what was said are set aside in ``ToolOutput.rejected`` (the graph notes
them) instead of competing with the others (:func:`implausible`): a transcript far longer than the
audio's duration allows, or text that is mostly not letters or digits (a model decoding garbage).

A request may carry a ``prompt``: text said before the audio (a conversation's earlier turns). It
reaches the speech recognisers whose ``transcribe`` (or the omni model's ``predict``) takes one
(:func:`~speech_hands.backends.base.takes_prompt`: the Whisper backends); ``PerceptionTool.takes_prompt``
says which, and the graph notes a speech recogniser that ran without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from speech_hands.audio import AudioInput, AudioStore
from speech_hands.backends.base import ASRBackend, CaptionBackend, OmniBackend, takes_prompt
from speech_hands.types import AudioRef, Hypothesis, ToolKind, ToolOutput, ToolRole

#: Fast read speech is about 6 words (some 35 characters) per second; a transcript needing more than
#: MAX_CHARS_PER_S per second of audio, plus SLACK_CHARS, was not spoken in it.
MAX_CHARS_PER_S = 50.0
SLACK_CHARS = 80
#: Below this share of letters and digits among the non-space characters, a candidate is not text.
MIN_WORD_CHAR_SHARE = 0.5


def implausible(text: str, kind: ToolKind, duration_s: float | None) -> str | None:
    """Why ``text`` cannot be a candidate for audio of ``duration_s`` seconds, or None when it can."""
    visible = [c for c in text if not c.isspace()]
    if visible and sum(c.isalnum() for c in visible) / len(visible) < MIN_WORD_CHAR_SHARE:
        return "mostly not letters or digits"
    if kind == "asr" and duration_s is not None and len(text) > MAX_CHARS_PER_S * duration_s + SLACK_CHARS:
        return f"{len(text)} characters for {duration_s:.1f} s of audio"
    return None


class PerceptionRequest(BaseModel):
    """Arguments of every perception tool."""

    audio: AudioRef = Field(description="reference to the audio (path + sha256); raw audio is never passed")
    question: str | None = Field(default=None, description="question about the audio (AudioQA), if any")
    n_best: int = Field(default=5, ge=1, le=32, description="how many hypotheses an ASR tool should return")
    prompt: str | None = Field(
        default=None, description="text said before this audio (Whisper's initial prompt); tools without one ignore it"
    )


@dataclass(frozen=True)
class PerceptionTool:
    """A langchain-core tool plus what the graph needs to know about it."""

    tool: StructuredTool
    role: ToolRole
    kind: ToolKind
    remote: bool = False  # the backend is reached over the network (its node retries on connection errors)
    takes_prompt: bool = False  # the backend uses PerceptionRequest.prompt (earlier text); others ignore it

    @property
    def name(self) -> str:
        return self.tool.name


def _runner(
    name: str,
    role: ToolRole,
    kind: ToolKind,
    store: AudioStore,
    call: Callable[[AudioInput, PerceptionRequest], list[Hypothesis]],
) -> Callable[..., dict[str, Any]]:
    def run(audio: AudioRef | dict, question: str | None = None, n_best: int = 5, prompt: str | None = None) -> dict:
        request = PerceptionRequest(audio=audio, question=question, n_best=n_best, prompt=prompt)
        started = time.perf_counter()
        returned = call(store.get(request.audio), request)
        kept = [h for h in returned if implausible(h.text, kind, request.audio.duration_s) is None]
        rejected = [h.model_copy(update={"source": name}) for h in returned if h not in kept]
        # Re-label source and rank so the list is consistent whatever the backend returned.
        hypotheses = [h.model_copy(update={"source": name, "rank": i}) for i, h in enumerate(kept)]
        output = ToolOutput(
            tool=name,
            role=role,
            kind=kind,
            hypotheses=hypotheses,
            rejected=rejected,
            elapsed_s=time.perf_counter() - started,
        )
        return output.model_dump(mode="json")

    return run


def asr_tool(backend: ASRBackend, store: AudioStore, *, role: ToolRole = "external") -> PerceptionTool:
    """An ASR backend as a tool returning its N-best list (with the request's prompt, when it takes one)."""
    prompted = takes_prompt(backend.transcribe)

    def call(audio: AudioInput, request: PerceptionRequest) -> list[Hypothesis]:
        if prompted and request.prompt:
            return backend.transcribe(audio, n_best=request.n_best, prompt=request.prompt)  # type: ignore[call-arg]
        return backend.transcribe(audio, n_best=request.n_best)

    run = _runner(backend.name, role, "asr", store, call)
    tool = StructuredTool.from_function(
        func=run,
        name=backend.name,
        description=f"Speech recognition with {backend.name}: returns an N-best list of transcripts, best first.",
        args_schema=PerceptionRequest,
    )
    remote = bool(getattr(backend, "remote", False))
    return PerceptionTool(tool=tool, role=role, kind="asr", remote=remote, takes_prompt=prompted)


def caption_tool(backend: CaptionBackend, store: AudioStore, *, role: ToolRole = "external") -> PerceptionTool:
    """A captioning / audio-QA backend as a tool returning its answer(s)."""
    run = _runner(backend.name, role, "caption", store, lambda a, r: backend.caption(a, r.question))
    tool = StructuredTool.from_function(
        func=run,
        name=backend.name,
        description=f"Audio captioning / question answering with {backend.name}.",
        args_schema=PerceptionRequest,
    )
    return PerceptionTool(tool=tool, role=role, kind="caption", remote=bool(getattr(backend, "remote", False)))


def omni_predict_tool(omni: OmniBackend, store: AudioStore) -> PerceptionTool:
    """The omni model's own first pass (the *internal* prediction) as a tool; the request's prompt reaches
    ``predict`` when it takes one (a composed omni passes it on only to a predictor that takes one)."""
    prompted = bool(getattr(omni, "takes_prompt", takes_prompt(omni.predict)))

    def call(audio: AudioInput, request: PerceptionRequest) -> list[Hypothesis]:
        if prompted and request.prompt:
            return omni.predict(audio, request.question, prompt=request.prompt)  # type: ignore[call-arg]
        return omni.predict(audio, request.question)

    run = _runner(omni.name, "internal", omni.kind, store, call)
    tool = StructuredTool.from_function(
        func=run,
        name=omni.name,
        description=f"The omni model {omni.name}'s own prediction (internal), before reflection.",
        args_schema=PerceptionRequest,
    )
    remote = bool(getattr(omni, "remote", False))
    return PerceptionTool(tool=tool, role="internal", kind=omni.kind, remote=remote, takes_prompt=prompted)


def as_tool(backend: ASRBackend | CaptionBackend, store: AudioStore, *, role: ToolRole = "external") -> PerceptionTool:
    """Wrap any ASR or caption backend by what it can do."""
    if hasattr(backend, "caption"):  # checked first: a caption backend may also offer transcribe
        return caption_tool(backend, store, role=role)  # type: ignore[arg-type]
    if hasattr(backend, "transcribe"):
        return asr_tool(backend, store, role=role)  # type: ignore[arg-type]
    raise TypeError(f"{backend!r} is neither an ASR backend (transcribe) nor a caption backend (caption)")
