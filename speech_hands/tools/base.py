"""Backend Protocols: one small interface per tool kind.

A backend knows its library and nothing of LangGraph; graph nodes know these Protocols and nothing of
any library. Anything with the right methods plugs in (structural typing), so a user's own ASR system
needs no base class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from speech_hands.types import AudioRef, Hypothesis, Reflection, ToolKind, ToolOutput

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class AudioInput:
    """Decoded audio handed to backends: mono float32 at 16 kHz, plus its reference.

    ``samples`` is ``None`` for a virtual reference (replay over recorded outputs, no audio)."""

    ref: AudioRef
    samples: np.ndarray | None

    @property
    def id(self) -> str:
        return self.ref.id

    def require_samples(self) -> np.ndarray:
        if self.samples is None:
            from speech_hands.errors import AudioError

            raise AudioError(
                f"input {self.ref.id!r} has no audio (virtual reference); this tool needs real audio. "
                "Pass an audio file, or use replay backends only."
            )
        return self.samples


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


@dataclass(frozen=True)
class ReflectionInput:
    """What the reflection step sees: the audio, the question, its own prediction and every tool's output."""

    audio: AudioInput
    question: str | None
    internal: ToolOutput | None
    externals: Sequence[ToolOutput]
    round: int = 0
    sample_index: int = 0
    n_samples: int = 1
    seed: int | None = None
    #: rewrites produced so far, oldest first. From round 1 on, ``internal`` holds the latest rewrite
    #: (the model's own current answer) and the original internal prediction is here and in
    #: ``original_internal``.
    previous_rewrites: Sequence[Hypothesis] = ()
    original_internal: ToolOutput | None = None

    def all_candidates(self) -> list[ToolOutput]:
        """Every tool output that took part, original internal first, failed tools excluded."""
        first = self.original_internal or self.internal
        outputs = [o for o in [first, *self.externals] if o is not None and o.ok]
        return outputs


@runtime_checkable
class ReflectionPolicy(Protocol):
    """Emits the first-token action with the probabilities of all three actions.

    ``sample=True`` asks for a *draw* (majority sampling) instead of the argmax decision; a
    deterministic policy draws from its own probabilities with the given seed."""

    name: str

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection: ...


@runtime_checkable
class RewriteStrategy(Protocol):
    """Re-derives the answer from the audio plus ALL candidates (the ``<rewrite>`` edge)."""

    name: str

    def rewrite(self, inp: ReflectionInput) -> Hypothesis: ...


@runtime_checkable
class OmniBackend(Protocol):
    """The omni model: its own prediction, the reflection decision and the rewrite, in one model
    (Qwen2.5-Omni in the paper). The embedded default composes it from parts
    (:class:`speech_hands.tools.composed.ComposedOmni`)."""

    name: str
    kind: ToolKind

    def predict(self, audio: AudioInput, question: str | None = None) -> list[Hypothesis]: ...

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection: ...

    def rewrite(self, inp: ReflectionInput) -> Hypothesis: ...
