"""The embedded rewrite strategy: weighted alignment voting over ALL candidates.

The ``<rewrite>`` edge means "neither my prediction nor the tool's top candidate is right". With no
generative omni model on a CPU, the embedded rewrite re-derives the transcript from every candidate
the tools produced (the internal N-best and each external N-best) with ROVER-style aligned voting
(:mod:`speech_hands.reflection.alignment`).

Weights: each source (tool) holds a total weight (``source_weights``, default 1.0 each), spread over
its N-best by the posterior ``softmax(score / temperature)`` of the hypotheses' mean per-token
log-probabilities. With ``temperature=0.1`` a hypothesis 0.03 nats/token better gets about 1.35x the
weight, so the N-best refines each source's vote without drowning its top-1; hypotheses without
scores (recorded systems) share their source's weight with a mild rank decay instead. Text is
normalised (Whisper's English normaliser by default) before alignment, so the rewrite comes out
lower-case without punctuation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from speech_hands.errors import ToolFailure
from speech_hands.reflection.alignment import combine
from speech_hands.reflection.base import ReflectionInput
from speech_hands.text import NormalizerName, get_normalizer
from speech_hands.types import Hypothesis, ToolOutput


class AlignmentVotingRewriter:
    """Rewrite by ROVER-style weighted voting over every candidate of every source."""

    name = "alignment-vote"

    def __init__(
        self,
        *,
        source_weights: Mapping[str, float] | None = None,
        temperature: float = 0.1,
        top_k_per_source: int | None = None,
        rank_decay: float = 0.7,
        normalizer: NormalizerName = "english",
    ) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.source_weights = dict(source_weights or {})
        self.temperature = temperature
        self.top_k_per_source = top_k_per_source
        self.rank_decay = rank_decay
        self._normalize = get_normalizer(normalizer)
        self._normalize("warm up")  # load the normaliser now, not inside the first timed node

    def _weights(self, output: ToolOutput) -> list[float]:
        hyps = output.hypotheses[: self.top_k_per_source] if self.top_k_per_source else output.hypotheses
        if all(h.score is not None for h in hyps):
            top = max(h.score for h in hyps)  # type: ignore[type-var]
            raw = [math.exp((h.score - top) / self.temperature) for h in hyps]  # type: ignore[operator]
        else:
            raw = [self.rank_decay**h.rank for h in hyps]
        total = sum(raw)
        source = self.source_weights.get(output.tool, 1.0)
        return [source * r / total for r in raw]

    def weighted_candidates(self, inp: ReflectionInput) -> list[tuple[list[str], float]]:
        """(normalised words, weight) for every hypothesis that takes part."""
        pairs: list[tuple[list[str], float]] = []
        for output in inp.all_candidates():
            hyps = output.hypotheses[: self.top_k_per_source] if self.top_k_per_source else output.hypotheses
            for hyp, weight in zip(hyps, self._weights(output)):
                pairs.append((self._normalize(hyp.text).split(), weight))
        return pairs

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        pairs = self.weighted_candidates(inp)
        if not pairs:
            raise ToolFailure("rewrite: no candidate to rewrite from (every tool failed or returned nothing)")
        combined = combine(pairs)
        confidence = combined.mean_confidence
        return Hypothesis(
            text=combined.text,
            score=math.log(confidence) if confidence > 0 else None,
            source=f"rewrite:{self.name}",
            rank=0,
        )
