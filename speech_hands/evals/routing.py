"""Routing analysis: gold labels per item, the predicted-vs-gold confusion matrix, per-action
precision / recall / F1, action distributions, and the oracle quantities.

The *predicted* action is the first-token decision (round 0), as in the paper's action-token F1; an
item the agent skipped (silent audio, every tool failed) or could not run is predicted ``none``.
Definitions used by the reports:

- **oracle router**: per item, the best of the three edges given the reference: the internal
  top-1, each external tool's top-1, and the rewrite candidate (what the rewrite edge produces);
- **best-of-two**: per item, the better of the internal top-1 and the external top-1(s), no rewrite;
- **oracle N-best**: per item, the best of every candidate anywhere (all N-best lists + rewrite),
  an upper bound for rescoring / rewriting;
- **best single**: the lowest corpus WER among the pool's single systems (internal, external
  top-1s); recorded systems outside the pool are listed for comparison only;
- **gap closed** = (best single - agent) / (best single - oracle router); 1 = the agent routes as
  well as the oracle, 0 = no better than the best single system, negative = worse.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, Field

from speech_hands.evals.runner import ItemResult
from speech_hands.metrics.labels import GoldLabel, LabelRule, asr_gold_action, qa_gold_action
from speech_hands.types import Action

__all__ = ["ActionScore", "RoutingAnalysis", "analyse_routing", "gap_closed", "gold_label"]

NONE = "none"
ACTION_NAMES = [a.value for a in Action]


def gold_label(result: ItemResult, rule: LabelRule) -> GoldLabel | None:
    """The item's gold action, or None if it has no usable candidates (failed / skipped)."""
    if result.error or not result.candidates:
        return None
    internal = result.internal
    internal_text = internal.top.text if internal is not None and internal.top is not None else None
    externals = {o.tool: [h.text for h in o.hypotheses] for o in result.externals if o.ok}
    if result.task == "qa":
        assert result.answer is not None
        return qa_gold_action(result.answer, result.choices, internal_text, externals, rule)
    assert result.reference is not None
    return asr_gold_action(result.reference, internal_text, externals, result.rewrite_candidate, rule)


class ActionScore(BaseModel):
    action: str
    precision: float
    recall: float
    f1: float
    support: int = Field(description="items whose gold action is this one")
    predicted: int = Field(description="items the agent routed this way")


class RoutingAnalysis(BaseModel):
    """Predicted vs gold first-token actions over the items that have a gold label."""

    rule: str
    labelled: int
    unlabelled: int = Field(description="items without a gold label (errors, skipped, no candidate)")
    confusion: dict[str, dict[str, int]] = Field(description="confusion[gold][predicted]")
    scores: list[ActionScore]
    accuracy: float
    macro_f1: float
    predicted_distribution: dict[str, int]
    gold_distribution: dict[str, int]
    rewrite_candidates: int = Field(description="labelled ASR items that had a rewrite candidate")


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def analyse_routing(results: Sequence[ItemResult], rule: LabelRule) -> tuple[RoutingAnalysis, list[GoldLabel | None]]:
    labels = [gold_label(r, rule) for r in results]
    pairs = [
        (label.action.value, r.first_action.value if r.first_action else NONE)
        for r, label in zip(results, labels)
        if label is not None
    ]
    predicted_names = ACTION_NAMES + ([NONE] if any(p == NONE for _, p in pairs) else [])
    confusion = {g: {p: 0 for p in predicted_names} for g in ACTION_NAMES}
    for gold, pred in pairs:
        confusion[gold][pred] += 1
    scores = []
    for name in ACTION_NAMES:
        tp = confusion[name][name]
        predicted = sum(confusion[g][name] for g in ACTION_NAMES)
        support = sum(confusion[name].values())
        precision, recall = _safe_div(tp, predicted), _safe_div(tp, support)
        f1 = _safe_div(2 * precision * recall, precision + recall)
        scores.append(
            ActionScore(action=name, precision=precision, recall=recall, f1=f1, support=support, predicted=predicted)
        )
    present = [s for s in scores if s.support > 0]
    predicted_counts = Counter(r.first_action.value if r.first_action else NONE for r in results)
    analysis = RoutingAnalysis(
        rule=rule.describe(),
        labelled=len(pairs),
        unlabelled=len(results) - len(pairs),
        confusion=confusion,
        scores=scores,
        accuracy=_safe_div(sum(confusion[n][n] for n in ACTION_NAMES), len(pairs)),
        macro_f1=_safe_div(sum(s.f1 for s in present), len(present)),
        predicted_distribution={n: predicted_counts.get(n, 0) for n in predicted_names},
        gold_distribution={n: sum(1 for g, _ in pairs if g == n) for n in ACTION_NAMES},
        rewrite_candidates=sum(
            1 for r, label in zip(results, labels) if label is not None and r.rewrite_candidate is not None
        ),
    )
    return analysis, labels


def gap_closed(best_single: float, agent: float, oracle: float) -> float | None:
    """(best single - agent) / (best single - oracle); None when the oracle is no better."""
    if best_single - oracle <= 1e-12:
        return None
    return (best_single - agent) / (best_single - oracle)
