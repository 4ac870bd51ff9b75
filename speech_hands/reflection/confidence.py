"""The embedded baseline reflection policy: a decision from the models' own confidence.

Until a learned reflector is trained, the default agent needs a real, inspectable policy that emits the
first-token action with probabilities of all three actions. This one scores each action with a logit
built from what the tools already report:

- ``z_internal = alpha * s_int + internal_bias`` where ``s_int`` is the internal top-1 score (for Whisper
  backends the mean log-probability per token, so ``exp(s)`` is a per-token probability);
- ``z_external = alpha * s_ext`` for the most confident external tool's top-1;
- ``z_rewrite = alpha * log(rewrite_below)``: a fixed bar; when *both* sides are less confident than
  ``rewrite_below`` per token, rewriting from all candidates is the most likely action;
- when the internal and external top-1 agree after normalisation there is nothing to arbitrate:
  ``agreement_bonus`` is added to ``z_internal`` (ties go to internal, as in the paper's label rule).

``probs = softmax(z)``; the decision is its argmax and a majority-sampling draw picks from
``softmax(z / temperature)``, both by :mod:`speech_hands.reflection.decision` (the rule every policy
shares). An action whose inputs are missing (a failed tool, a single candidate source for rewrite)
gets probability 0. Hypotheses without scores (recorded systems, AudioQA answers) use
``missing_score``. The defaults were chosen on the LibriSpeech dev utterances with the bundled Whisper
models; they are a baseline, not a learned model, and docs/reflector.md says so.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.decision import action_probs, decide, draw, tuple_hash_seed
from speech_hands.text import NormalizerName, get_normalizer
from speech_hands.types import Action, Reflection, ToolOutput


class ConfidencePolicySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=10.0, gt=0, description="sharpness of the softmax over action logits")
    internal_bias: float = Field(default=0.5, description="prior preference for the own prediction")
    rewrite_below: float = Field(default=0.55, gt=0, lt=1, description="per-token probability bar")
    agreement_bonus: float = Field(default=6.0, ge=0)
    missing_score: float = Field(default=math.log(0.7), description="score assumed when a tool gives none")
    temperature: float = Field(default=1.0, gt=0, description="sampling temperature for majority draws")
    normalizer: NormalizerName = "english"


class ConfidencePolicy:
    """Baseline first-token policy from tool confidences (see module docstring for the rule)."""

    name = "confidence-baseline"

    def __init__(self, settings: ConfidencePolicySettings | None = None, **overrides: float) -> None:
        base = settings or ConfidencePolicySettings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self._normalize = get_normalizer(self.settings.normalizer)
        self._normalize("warm up")  # load the normaliser now, not inside the first timed node

    def _score(self, output: ToolOutput | None) -> float | None:
        if output is None or not output.ok:
            return None
        top = output.top
        assert top is not None
        return top.score if top.score is not None else self.settings.missing_score

    def _best_external(self, inp: ReflectionInput) -> ToolOutput | None:
        usable = [o for o in inp.externals if o.ok]
        if not usable:
            return None
        return max(usable, key=lambda o: (self._score(o) or -math.inf, -inp.externals.index(o)))

    def logits(self, inp: ReflectionInput) -> tuple[dict[Action, float], ToolOutput | None, str]:
        """The three action logits, the external tool ``<external>`` would pick, and a short rationale."""
        s = self.settings
        external = self._best_external(inp)
        s_int, s_ext = self._score(inp.internal), self._score(external)
        z = {a: -math.inf for a in Action}
        if s_int is not None:
            z[Action.INTERNAL] = s.alpha * s_int + s.internal_bias
        if s_ext is not None:
            z[Action.EXTERNAL] = s.alpha * s_ext
        distinct_sources = sum(1 for o in [inp.internal, *inp.externals] if o is not None and o.ok)
        if distinct_sources >= 2:
            z[Action.REWRITE] = s.alpha * math.log(s.rewrite_below)
        agree = False
        if s_int is not None and external is not None:
            assert inp.internal is not None and inp.internal.top is not None and external.top is not None
            agree = self._normalize(inp.internal.top.text) == self._normalize(external.top.text)
            if agree:
                z[Action.INTERNAL] += s.agreement_bonus
        parts = [
            f"internal p/token={math.exp(s_int):.3f}" if s_int is not None else "internal missing",
            f"external({external.tool}) p/token={math.exp(s_ext):.3f}"
            if external and s_ext is not None
            else "external missing",
            "top-1s agree" if agree else "top-1s differ",
        ]
        return z, external, "; ".join(parts)

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        z, external, rationale = self.logits(inp)
        probs = action_probs(z)
        if sample:
            tempered = action_probs(z, self.settings.temperature)
            action = draw(tempered, seed=tuple_hash_seed(inp.seed, inp.round, inp.sample_index))
        else:
            action = decide(probs)
        answer = None
        if action is Action.INTERNAL and inp.internal is not None and inp.internal.top is not None:
            answer = inp.internal.top.text
        elif action is Action.EXTERNAL and external is not None and external.top is not None:
            answer = external.top.text
        return Reflection(
            action=action,
            probs=probs,
            raw_token=action.token,
            policy=self.name,
            external_tool=external.tool if external is not None else None,
            external_rank=0,
            answer=answer,
            round=inp.round,
            sample_index=inp.sample_index,
            rationale=rationale,
        )
