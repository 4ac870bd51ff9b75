"""The one decision rule of the reflection step, written once for every policy and backend.

- :func:`action_probs`: softmax over the three action logits (``-inf`` or NaN: that action gets 0);
- :func:`decide`: the most probable action, ties broken in the paper's label order
  internal > external > rewrite (:data:`ACTIONS` is that order);
- :func:`draw`: one majority-sampling draw from ``softmax(log p / temperature)``, seeded;
- :func:`certain`: a reflection with all probability on one action (fallbacks, fixed points).

Like whisper's single ``MaximumLikelihoodRanker``, a policy computes its logits its own way and
leaves these steps to this module, so every policy reports probabilities and breaks ties the same way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from speech_hands.errors import ModelOutputError
from speech_hands.types import Action, Reflection

#: The three actions, in the tie order (internal > external > rewrite).
ACTIONS: tuple[Action, ...] = tuple(Action)


def _usable(z: float) -> bool:
    return z != -math.inf and not math.isnan(z)


def softmax(logits: Sequence[float], temperature: float = 1.0) -> list[float]:
    """``softmax(logits / temperature)``; ``-inf`` and NaN entries get 0. Raises
    :class:`~speech_hands.errors.ModelOutputError` when no entry is finite."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    finite = [z for z in logits if _usable(z)]
    if not finite:
        raise ModelOutputError("no action is possible: every action's score is -inf or NaN")
    top = max(finite)
    weights = [math.exp((z - top) / temperature) if _usable(z) else 0.0 for z in logits]
    total = sum(weights)
    return [w / total for w in weights]


def action_probs(logits: Mapping[Action, float] | Sequence[float], temperature: float = 1.0) -> dict[Action, float]:
    """The three actions' probabilities from their logits (a mapping, or a sequence in ACTIONS order)."""
    values = [logits[a] for a in ACTIONS] if isinstance(logits, Mapping) else list(logits)
    if len(values) != len(ACTIONS):
        raise ValueError(f"expected {len(ACTIONS)} action logits, got {len(values)}")
    return dict(zip(ACTIONS, softmax(values, temperature)))


def decide(probs: Mapping[Action, float]) -> Action:
    """The decision: the most probable action; ties go to internal, then external, then rewrite."""
    return max(ACTIONS, key=lambda a: (probs.get(a, 0.0), -ACTIONS.index(a)))


def draw(probs: Mapping[Action, float], *, seed: int, temperature: float = 1.0) -> Action:
    """One majority-sampling draw from ``softmax(log p / temperature)`` (``p ** (1 / temperature)``
    renormalised), reproducible for a given seed whatever order parallel draws run in."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    weights = [probs.get(a, 0.0) ** (1.0 / temperature) for a in ACTIONS]
    return random.Random(seed).choices(ACTIONS, weights=weights, k=1)[0]


def certain(action: Action, *, policy: str, rationale: str | None = None, **fields: Any) -> Reflection:
    """A reflection that puts all probability on ``action`` (a fallback, or accepting a fixed point)."""
    probs = {a: 1.0 if a is action else 0.0 for a in ACTIONS}
    return Reflection(action=action, probs=probs, raw_token=action.token, policy=policy, rationale=rationale, **fields)
