"""Majority vote over sampled reflections (the paper's majority sampling, docs/method.md section 4).

k draws each give an action and, where the policy writes one, an answer. Draws are grouped by their
**normalised answer** (a draw without an answer, e.g. a ``<rewrite>`` whose text is not written yet,
is grouped under its action token), and each group's weight is the sum of its draws' weights:

- ``weighted=True`` (default): a draw weighs the probability its policy gave to its own action;
- ``weighted=False``: every draw weighs 1.

Tie rule, applied in order until one group is left:

1. the larger summed weight (compared with a 1e-9 tolerance);
2. more draws in the group;
3. action priority internal > external > rewrite (the paper's label tie order,
   :data:`~speech_hands.reflection.decision.ACTIONS`), taking the group's best action;
4. the group holding the lowest draw index.

Within the winning group the representative draw is the one with the highest own-action probability
(lowest index on ties). The decision carries the mean of all draws' action probabilities, so it still
reports a probability for each of the three actions.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from speech_hands.reflection.decision import ACTIONS
from speech_hands.text import NormalizerName, get_normalizer
from speech_hands.types import Action, Reflection

_EPS = 1e-9


class VoteGroup(BaseModel):
    key: str
    weight: float
    count: int
    sample_indices: list[int]
    best_action: Action


class VoteResult(BaseModel):
    """The tally and the decision it led to."""

    key: str = Field(description="the winning normalised answer (or action token)")
    decision: Reflection
    groups: list[VoteGroup]
    tie_broken_by: str | None = Field(
        default=None, description="None, or which tie rule decided: count, action_priority, sample_index"
    )
    weighted: bool

    @property
    def tally(self) -> dict[str, float]:
        return {g.key: g.weight for g in self.groups}


def _key(draw: Reflection, normalize) -> str:
    if draw.answer is None or not draw.answer.strip():
        return draw.action.token
    return normalize(draw.answer)


def majority_vote(
    draws: Sequence[Reflection], *, weighted: bool = True, normalizer: NormalizerName = "english"
) -> VoteResult:
    """Vote over ``draws``; see the module docstring for the weighting and the tie rule."""
    if not draws:
        raise ValueError("majority_vote needs at least one draw")
    normalize = get_normalizer(normalizer)
    members: dict[str, list[Reflection]] = {}
    for draw in draws:
        members.setdefault(_key(draw, normalize), []).append(draw)
    groups = [
        VoteGroup(
            key=key,
            weight=sum(d.confidence if weighted else 1.0 for d in group),
            count=len(group),
            sample_indices=sorted(d.sample_index for d in group),
            best_action=min((d.action for d in group), key=ACTIONS.index),
        )
        for key, group in members.items()
    ]
    contenders = list(groups)
    tie_broken_by = None
    rules = [
        ("weight", lambda g: -g.weight),
        ("count", lambda g: -g.count),
        ("action_priority", lambda g: ACTIONS.index(g.best_action)),
        ("sample_index", lambda g: g.sample_indices[0]),
    ]
    for i, (rule, sort_key) in enumerate(rules):
        best = min(sort_key(g) for g in contenders)
        tolerance = _EPS if rule == "weight" else 0
        remaining = [g for g in contenders if sort_key(g) - best <= tolerance]
        if len(remaining) < len(contenders) and i > 0 and len(contenders) > 1:
            tie_broken_by = rule
        contenders = remaining
        if len(contenders) == 1:
            break
    winner = contenders[0]
    group = members[winner.key]
    representative = min(group, key=lambda d: (-d.confidence, d.sample_index))
    mean_probs = {a: sum(d.probs[a] for d in draws) / len(draws) for a in Action}
    total = sum(mean_probs.values())
    mean_probs = {a: p / total for a, p in mean_probs.items()}
    decision = representative.model_copy(
        update={
            "probs": mean_probs,
            "policy": f"{representative.policy}+majority-vote",
            "rationale": f"majority vote over {len(draws)} draws: {winner.key!r} won with weight "
            f"{winner.weight:.3f} ({winner.count} draws)"
            + (f", tie broken by {tie_broken_by}" if tie_broken_by else ""),
        }
    )
    return VoteResult(key=winner.key, decision=decision, groups=groups, tie_broken_by=tie_broken_by, weighted=weighted)
