"""What the reflection step sees, and the two Protocols that act on it.

:class:`ReflectionInput` carries the audio, the question, the model's own (current) prediction and
every tool's output. A :class:`ReflectionPolicy` turns it into the first-token action with the
probabilities of all three actions; a :class:`RewriteStrategy` re-derives the answer from it on the
``<rewrite>`` edge. An omni backend (:class:`~speech_hands.backends.base.OmniBackend`) offers both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from speech_hands.audio import AudioInput
from speech_hands.types import Hypothesis, Reflection, ToolOutput


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
