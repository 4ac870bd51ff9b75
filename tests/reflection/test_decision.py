"""The shared decision rule (speech_hands.reflection.decision): softmax, tie order, draws, certain."""

from __future__ import annotations

import math
import random

import pytest

from speech_hands.errors import ModelOutputError
from speech_hands.reflection import action_tokens as at
from speech_hands.reflection.decision import (
    ACTIONS,
    action_probs,
    certain,
    decide,
    draw,
    softmax,
    tuple_hash_seed,
)
from speech_hands.types import Action, Reflection

INTERNAL, EXTERNAL, REWRITE = Action.INTERNAL, Action.EXTERNAL, Action.REWRITE


def test_actions_are_in_the_papers_tie_order():
    assert ACTIONS == (INTERNAL, EXTERNAL, REWRITE)


def test_softmax_is_shift_invariant_and_tempered():
    assert softmax([1.0, 2.0, 3.0]) == pytest.approx(softmax([101.0, 102.0, 103.0]))
    assert softmax([0.0, math.log(3.0)]) == pytest.approx([0.25, 0.75])
    hot = softmax([0.0, 2.0], temperature=2.0)
    assert hot == pytest.approx(softmax([0.0, 1.0]))
    with pytest.raises(ValueError, match="temperature"):
        softmax([0.0], temperature=0.0)


def test_minus_infinity_and_nan_get_zero_probability():
    probs = action_probs({INTERNAL: 0.0, EXTERNAL: -math.inf, REWRITE: math.nan})
    assert probs == {INTERNAL: 1.0, EXTERNAL: 0.0, REWRITE: 0.0}
    assert action_probs([-math.inf, 1.0, 1.0]) == {INTERNAL: 0.0, EXTERNAL: 0.5, REWRITE: 0.5}
    with pytest.raises(ModelOutputError, match="no action is possible"):
        action_probs([-math.inf, math.nan, -math.inf])
    with pytest.raises(ValueError, match="expected 3 action logits"):
        action_probs([0.0, 1.0])


def test_ties_go_to_internal_then_external_then_rewrite():
    assert decide({INTERNAL: 0.4, EXTERNAL: 0.4, REWRITE: 0.2}) is INTERNAL
    assert decide({INTERNAL: 0.2, EXTERNAL: 0.4, REWRITE: 0.4}) is EXTERNAL
    assert decide({INTERNAL: 0.3, EXTERNAL: 0.3, REWRITE: 0.4}) is REWRITE
    assert decide(action_probs([0.0, 0.0, 0.0])) is INTERNAL
    # the mapping's own order does not matter, only ACTIONS order
    assert decide({REWRITE: 0.5, EXTERNAL: 0.5, INTERNAL: 0.0}) is EXTERNAL


def test_a_draw_is_reproducible_and_follows_the_distribution():
    probs = {INTERNAL: 0.6, EXTERNAL: 0.3, REWRITE: 0.1}
    first = [draw(probs, seed=s) for s in range(2000)]
    assert first == [draw(probs, seed=s) for s in range(2000)]
    share = {a: first.count(a) / len(first) for a in ACTIONS}
    assert share[INTERNAL] == pytest.approx(0.6, abs=0.04) and share[REWRITE] == pytest.approx(0.1, abs=0.03)
    assert all(draw({INTERNAL: 0.0, EXTERNAL: 1.0, REWRITE: 0.0}, seed=s) is EXTERNAL for s in range(50))


def test_tempering_probabilities_draws_as_tempering_logits():
    """``p ** (1/t)`` (a policy with probabilities) and ``softmax(z / t)`` (one with logits) are one
    distribution; with the same seed they pick the same action."""
    for logits in ([0.3, -1.2, 0.1], [2.0, 2.0, -5.0], [-0.5, 1.5, -math.inf]):
        for t in (0.5, 1.0, 2.5):
            from_probs = [draw(action_probs(logits), seed=s, temperature=t) for s in range(3000)]
            from_logits = [draw(action_probs(logits, t), seed=s) for s in range(3000)]
            assert from_probs == from_logits


def test_a_draw_is_the_same_pick_as_random_choices_with_that_seed():
    """Policies kept their seeding; the pick itself is ``random.Random(seed).choices`` in ACTIONS order."""
    probs = action_probs([0.2, 0.1, -0.4])
    for s in range(500):
        expected = random.Random(s).choices(list(ACTIONS), weights=[probs[a] for a in ACTIONS])[0]
        assert draw(probs, seed=s) is expected


def test_a_cold_draw_is_the_decision_and_an_impossible_one_raises():
    probs = {INTERNAL: 0.2, EXTERNAL: 0.5, REWRITE: 0.3}
    assert {draw(probs, seed=s, temperature=1e-6) for s in range(20)} == {EXTERNAL}  # weights underflow
    with pytest.raises(ValueError, match="temperature"):
        draw(probs, seed=0, temperature=0.0)
    with pytest.raises(ValueError, match="probability 0"):
        draw({a: 0.0 for a in ACTIONS}, seed=0)


def test_tuple_hash_seed_is_the_embedded_policies_seed():
    assert tuple_hash_seed(None, 0, 3) == tuple_hash_seed(0, 0, 3) == hash((0, 0, 3)) & 0xFFFFFFFF
    assert tuple_hash_seed(7, 1, 2) != tuple_hash_seed(7, 1, 3)


def test_certain_puts_all_probability_on_one_action():
    r = certain(REWRITE, policy="fallback:test", rationale="why", round=1, answer="text")
    assert isinstance(r, Reflection)
    assert r.action is REWRITE and r.raw_token == REWRITE.token and r.confidence == 1.0
    assert r.probs == {INTERNAL: 0.0, EXTERNAL: 0.0, REWRITE: 1.0}
    assert (r.policy, r.rationale, r.round, r.answer) == ("fallback:test", "why", 1, "text")


def test_action_token_backends_use_the_shared_rule():
    first = at.FirstToken(logits=(1.0, 1.0, -math.inf), raw_token="<external>")
    assert first.probs() == action_probs([1.0, 1.0, -math.inf])
    assert at.decide(first) is INTERNAL  # tie -> internal
    seed = at.draw_seed(0, 0, 5)
    assert at.draw_action(first, seed=seed, temperature=2.0) is draw(first.probs(2.0), seed=seed)
