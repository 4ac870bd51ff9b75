"""Backend Protocols: one small interface per tool kind.

A backend knows its library and nothing of LangGraph; graph nodes know these Protocols and nothing of
any library. Anything with the right methods plugs in (structural typing), so a user's own ASR system
needs no base class.

An ASR backend may also take ``prompt: str | None`` in ``transcribe`` (an omni backend in
``predict``): text said before the audio, e.g. the earlier turns of a conversation (Whisper's
initial prompt). Only the Whisper backends do (``faster_whisper``, ``openai_whisper``); the graph asks
:func:`takes_prompt` and notes a tool that runs without it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from speech_hands.audio import AudioInput
from speech_hands.reflection.base import ReflectionInput
from speech_hands.types import Hypothesis, Reflection, ToolKind


@runtime_checkable
class ASRBackend(Protocol):
    """Speech recognition returning an N-best list, best first."""

    name: str

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]: ...


@runtime_checkable
class CaptionBackend(Protocol):
    """Audio captioning / audio question answering (Audio Flamingo 3 style): 1-best or a few samples."""

    name: str

    def caption(self, audio: AudioInput, question: str | None = None) -> list[Hypothesis]: ...


@runtime_checkable
class OmniBackend(Protocol):
    """The omni model: its own prediction, the reflection decision and the rewrite, in one model
    (Qwen2.5-Omni in the paper). The embedded default composes it from parts
    (:class:`speech_hands.backends.composed.ComposedOmni`)."""

    name: str
    kind: ToolKind

    def predict(self, audio: AudioInput, question: str | None = None) -> list[Hypothesis]: ...

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection: ...

    def rewrite(self, inp: ReflectionInput) -> Hypothesis: ...


def takes_prompt(method: Callable[..., Any]) -> bool:
    """Whether a backend's ``transcribe`` / ``predict`` accepts a ``prompt`` keyword (earlier text)."""
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return "prompt" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
