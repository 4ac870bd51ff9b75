"""The one decision rule of the reflection step, written once for every policy and backend.

- :data:`ACTIONS`: the three actions in the paper's label tie order internal > external > rewrite; every
  array of per-action numbers in the package (logit rows, probability rows) is in this order;
- :func:`softmax` / :func:`action_probs`: probabilities from action logits (``-inf`` or NaN: that action
  gets 0), optionally at a temperature;
- :func:`decide`: the most probable action, ties broken in :data:`ACTIONS` order;
- :func:`draw`: one seeded majority-sampling draw (:func:`tuple_hash_seed`: the embedded policies' seed);
- :func:`certain`: a reflection with all probability on one action (fallbacks, fixed points).

Why one module: the policies (confidence baseline, learned reflector, action-token models behind any
backend, the training code that fits the learned one) compute their logits their own way, but the
step from logits to a reported distribution, a decision and a draw must be the same everywhere, or two
policies given the same logits would break ties or sample differently. Like whisper's single
``MaximumLikelihoodRanker``, the rule lives here and the policies call it.

Temperature, two equivalent entrances: ``softmax(z / t)`` is ``softmax(z) ** (1 / t)`` renormalised,
so a policy holding logits tempers them with ``action_probs(z, t)`` and draws at temperature 1, and a
policy holding only probabilities (the learned one, after merging same-answer actions) passes ``t`` to
:func:`draw`. Tempering logits is the exact route (a probability that underflowed to 0 cannot be
flattened back), so policies that have logits use it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from speech_hands.errors import ModelOutputError
from speech_hands.types import Action, Reflection

if TYPE_CHECKING:
    from speech_hands.reflection.base import ReflectionInput

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
        raise ModelOutputError(
            "no action is possible: every action's score is -inf or NaN (no usable candidate source, "
            "or the model gave no action token a finite score)"
        )
    top = max(finite)
    weights = [math.exp((z - top) / temperature) if _usable(z) else 0.0 for z in logits]
    total = sum(weights)
    return [w / total for w in weights]


def action_probs(logits: Mapping[Action, float] | Sequence[float], temperature: float = 1.0) -> dict[Action, float]:
    """The three actions' probabilities from their logits (a mapping, or a sequence in ACTIONS order)."""
    values = [logits[a] for a in ACTIONS] if isinstance(logits, Mapping) else [float(z) for z in logits]
    if len(values) != len(ACTIONS):
        raise ValueError(f"expected {len(ACTIONS)} action logits, got {len(values)}")
    return dict(zip(ACTIONS, softmax(values, temperature)))


def decide(probs: Mapping[Action, float]) -> Action:
    """The decision: the most probable action; ties go to internal, then external, then rewrite."""
    return max(ACTIONS, key=lambda a: (probs.get(a, 0.0), -ACTIONS.index(a)))


def draw(probs: Mapping[Action, float], *, seed: int, temperature: float = 1.0) -> Action:
    """One majority-sampling draw from ``probs`` at ``temperature``: weights ``p ** (1 / temperature)``
    (``softmax(log p / temperature)`` once normalised), picked by ``random.Random(seed)``, so a draw is
    reproducible for a given seed whatever order parallel draws run in.

    When every weight underflows (a temperature near 0) the draw is its limit, :func:`decide`."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    if not any(probs.get(a, 0.0) > 0 for a in ACTIONS):
        raise ValueError("cannot draw an action: every action has probability 0")
    weights = [probs.get(a, 0.0) ** (1.0 / temperature) for a in ACTIONS]
    if not any(weights):
        return decide(probs)
    return random.Random(seed).choices(ACTIONS, weights=weights, k=1)[0]


def tuple_hash_seed(seed: int | None, round_: int, sample_index: int) -> int:
    """The draw seed of the embedded policies (confidence baseline, learned reflector): Python's hash of
    ``(seed, round, sample_index)``, stable across processes for integers. The action-token backends
    seed with :func:`speech_hands.reflection.action_tokens.draw_seed` instead (salted by the prompt);
    each keeps its scheme so recorded majority-sampling runs stay reproducible."""
    return hash((seed or 0, round_, sample_index)) & 0xFFFFFFFF


def certain(action: Action, *, policy: str, rationale: str | None = None, **fields: Any) -> Reflection:
    """A reflection that puts all probability on ``action`` (a fallback, or accepting a fixed point);
    ``fields`` are further :class:`~speech_hands.types.Reflection` fields (answer, round, ...)."""
    probs = {a: 1.0 if a is action else 0.0 for a in ACTIONS}
    return Reflection(action=action, probs=probs, raw_token=action.token, policy=policy, rationale=rationale, **fields)


def accept_rewrite(inp: ReflectionInput, *, policy: str, rationale: str) -> Reflection:
    """Round >= 1 after a rewrite: ``<internal>`` with certainty on the rewritten text (for policies whose
    rewrite is a fixed point, or that were trained on first-round decisions only)."""
    top = inp.internal.top if inp.internal is not None else None
    return certain(
        Action.INTERNAL,
        policy=policy,
        answer=top.text if top else None,
        round=inp.round,
        sample_index=inp.sample_index,
        rationale=rationale,
    )
