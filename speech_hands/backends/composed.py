"""An omni backend assembled from parts: an internal predictor, a reflection policy and a rewriter.

The paper's omni model does all three in one network. Offline on a CPU we have no such model, so the
embedded default composes the role: Whisper base predicts, a policy emits the first-token action, and
a rewrite strategy re-derives the answer from all candidates. A real omni backend (Qwen2.5-Omni)
implements :class:`~speech_hands.backends.base.OmniBackend` directly and replaces this object whole.
"""

from __future__ import annotations

from speech_hands.audio import AudioInput
from speech_hands.backends.base import ASRBackend, CaptionBackend, takes_prompt
from speech_hands.reflection.base import ReflectionInput, ReflectionPolicy, RewriteStrategy
from speech_hands.types import Hypothesis, Reflection, ToolKind


class ComposedOmni:
    """``predict`` from ``predictor``, ``reflect`` from ``policy``, ``rewrite`` from ``rewriter``."""

    def __init__(
        self,
        predictor: ASRBackend | CaptionBackend,
        policy: ReflectionPolicy,
        rewriter: RewriteStrategy,
        *,
        name: str | None = None,
        n_best: int = 5,
    ) -> None:
        self.predictor = predictor
        self.policy = policy
        self.rewriter = rewriter
        self.n_best = n_best
        # a caption / QA predictor may also offer transcribe(); what it can answer decides the kind
        self.kind: ToolKind = "answer" if hasattr(predictor, "caption") else "asr"
        self.name = name or predictor.name

    def predict(self, audio: AudioInput, question: str | None = None, prompt: str | None = None) -> list[Hypothesis]:
        """The predictor's answer; ``prompt`` (earlier text) reaches a speech recogniser that takes one
        (:func:`~speech_hands.backends.base.takes_prompt`), and is ignored otherwise."""
        if self.kind == "answer":
            return self.predictor.caption(audio, question)  # type: ignore[union-attr]
        transcribe = self.predictor.transcribe  # type: ignore[union-attr]
        if prompt and takes_prompt(transcribe):
            return transcribe(audio, n_best=self.n_best, prompt=prompt)
        return transcribe(audio, n_best=self.n_best)

    @property
    def takes_prompt(self) -> bool:
        """Whether :meth:`predict` passes a prompt on (the predictor is a speech recogniser that takes one)."""
        return self.kind == "asr" and takes_prompt(self.predictor.transcribe)  # type: ignore[union-attr]

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        return self.policy.reflect(inp, sample=sample)

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        return self.rewriter.rewrite(inp)

    def describe(self) -> dict[str, str]:
        return {"predictor": self.predictor.name, "policy": self.policy.name, "rewriter": self.rewriter.name}
