"""Gold action labels: which of the three first tokens was right for an item (docs/method.md section 3).

ASR, ``rule="paper"`` (the reference scripts' rule), with w(x) the error count of x against the
reference after normalisation (comparing counts on one reference is comparing WERs):

- ``internal`` if w(internal) == 0, or w(internal) <= w(best external) and w(internal) <= w(rewrite);
- else ``external`` if w(best external) <= w(internal) and w(best external) <= w(rewrite);
- else ``rewrite``.

Ties go to internal, then external. "best external" is the best hypothesis anywhere in the external
N-best lists (an oracle pick inside the lists; ``oracle_external=False`` uses each tool's top-1 only).
"rewrite" is the output of a rewrite pass (the paper: a generative error-correction model over audio +
N-best; here: whatever rewrite strategy the agent uses). Without a rewrite candidate w(rewrite) is
infinite, so ``rewrite`` can never be the label: pass one to get three-way labels. ``tolerance``
(in errors) lets internal win near-ties: w(internal) <= w(other) + tolerance.

ASR, ``rule="threshold"`` (the harness issue's phrasing): a candidate is "right" when its WER is at
most ``threshold`` (0.0 = exactly right). ``internal`` if the internal prediction is right, else
``external`` if some external candidate is right, else ``rewrite`` (both wrong). No rewrite candidate
is needed.

AudioQA: a prediction is right when it matches the gold option (:mod:`speech_hands.metrics.qa`).
``internal`` if the internal answer is right; else ``external`` if the external 1-best is right (or,
with ``any_external_sample=True``, any of its samples); else ``rewrite``.

The normaliser defaults to Whisper's English normaliser, the same as reported WER; the reference
scripts used the basic normaliser (``normalizer="basic"`` reproduces them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from speech_hands.metrics.qa import MatchMode, is_correct
from speech_hands.metrics.wer import Unit, word_errors
from speech_hands.text import NormalizerName
from speech_hands.types import Action

__all__ = ["GoldLabel", "LabelRule", "asr_gold_action", "decide_asr_action", "qa_gold_action"]


class LabelRule(BaseModel):
    """How gold actions are derived; every report states the rule it used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["paper", "threshold"] = "paper"
    normalizer: NormalizerName = "english"
    unit: Unit = "word"
    oracle_external: bool = Field(default=True, description="best hypothesis anywhere in the N-best lists")
    tolerance: int = Field(default=0, ge=0, description="paper rule: errors internal may exceed others by")
    threshold: float = Field(default=0.0, ge=0.0, description="threshold rule: WER at or below counts as right")
    qa_match: MatchMode = "exact"
    any_external_sample: bool = False

    def describe(self) -> str:
        if self.rule == "threshold":
            core = f"threshold rule (right = WER <= {self.threshold:g})"
        else:
            core = "paper rule (lowest error count wins; ties to internal, then external)"
        pick = "best of the external N-best" if self.oracle_external else "external top-1"
        return f"{core}; {pick}; {self.normalizer} normaliser; {self.unit}-level"


class GoldLabel(BaseModel):
    """The gold action of one item and the evidence behind it."""

    model_config = ConfigDict(frozen=True)

    action: Action
    errors: dict[str, float] = Field(
        default_factory=dict,
        description="error counts (ASR) or 0/1 wrongness (QA) of internal, external, rewrite; inf if absent",
    )
    wer: dict[str, float] = Field(default_factory=dict, description="ASR: WER of internal, external, rewrite")
    external_tool: str | None = Field(default=None, description="the tool holding the best external candidate")
    external_rank: int | None = Field(default=None, description="its rank in that tool's N-best")
    external_text: str | None = None


def decide_asr_action(internal: float, external: float, rewrite: float, tolerance: float = 0) -> Action:
    """The paper's rule on one utterance's error counts (or WERs: same reference, same order):
    internal if exactly right or no worse than both others (within ``tolerance``); else external if
    no worse than both; else rewrite. ``inf`` marks a candidate that is absent."""
    if internal == 0 or (internal <= external + tolerance and internal <= rewrite + tolerance):
        return Action.INTERNAL
    if external <= internal and external <= rewrite:
        return Action.EXTERNAL
    return Action.REWRITE


def _best_external(
    reference: str, externals: Mapping[str, Sequence[str]], rule: LabelRule
) -> tuple[float, float, str | None, int | None, str | None]:
    """(errors, wer, tool, rank, text) of the best external candidate; inf when there is none."""
    best: tuple[float, float, str | None, int | None, str | None] = (math.inf, math.inf, None, None, None)
    for tool, hypotheses in externals.items():
        pool = hypotheses if rule.oracle_external else hypotheses[:1]
        for rank, text in enumerate(pool):
            counts = word_errors(reference, text, normalizer=rule.normalizer, unit=rule.unit)
            if counts.errors < best[0]:  # strict: the earlier tool / higher rank keeps ties
                best = (counts.errors, counts.wer, tool, rank, text)
    return best


def asr_gold_action(
    reference: str,
    internal: str | None,
    externals: Mapping[str, Sequence[str]],
    rewrite: str | None = None,
    rule: LabelRule | None = None,
) -> GoldLabel:
    """The gold action for one ASR item (see the module docstring for the rules)."""
    rule = rule or LabelRule()

    def measure(text: str | None) -> tuple[float, float]:
        if text is None:
            return math.inf, math.inf
        counts = word_errors(reference, text, normalizer=rule.normalizer, unit=rule.unit)
        return float(counts.errors), counts.wer

    e_int, w_int = measure(internal)
    e_ext, w_ext, tool, rank, ext_text = _best_external(reference, externals, rule)
    e_rw, w_rw = measure(rewrite)
    if rule.rule == "threshold":
        if w_int <= rule.threshold:
            action = Action.INTERNAL
        elif w_ext <= rule.threshold:
            action = Action.EXTERNAL
        else:
            action = Action.REWRITE
    else:
        action = decide_asr_action(e_int, e_ext, e_rw, rule.tolerance)
    return GoldLabel(
        action=action,
        errors={"internal": e_int, "external": e_ext, "rewrite": e_rw},
        wer={"internal": w_int, "external": w_ext, "rewrite": w_rw},
        external_tool=tool,
        external_rank=rank,
        external_text=ext_text,
    )


def qa_gold_action(
    answer: str,
    choices: Sequence[str],
    internal: str | None,
    externals: Mapping[str, Sequence[str]],
    rule: LabelRule | None = None,
) -> GoldLabel:
    """The gold action for one multiple-choice AudioQA item."""
    rule = rule or LabelRule()

    def right(text: str | None) -> bool:
        return text is not None and is_correct(text, answer, choices, mode=rule.qa_match)

    internal_right = right(internal)
    tool = rank = text = None
    for name, samples in externals.items():
        pool = samples if rule.any_external_sample else samples[:1]
        hit = next((i for i, s in enumerate(pool) if right(s)), None)
        if hit is not None:
            tool, rank, text = name, hit, pool[hit]
            break
    if internal_right:
        action = Action.INTERNAL
    elif tool is not None:
        action = Action.EXTERNAL
    else:
        action = Action.REWRITE
    return GoldLabel(
        action=action,
        errors={"internal": 0.0 if internal_right else 1.0, "external": 0.0 if tool else 1.0},
        external_tool=tool,
        external_rank=rank,
        external_text=text,
    )
