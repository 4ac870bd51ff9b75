"""ROVER-style aligned voting (the rewrite's combination step) and the majority vote with its tie rule,
on hand-made candidate sets whose right answer is known."""

from __future__ import annotations

import pytest

from speech_hands.reflection.alignment import combine
from speech_hands.reflection.vote import majority_vote
from speech_hands.types import Action, Reflection


def words(text: str) -> list[str]:
    return text.split()


def test_identical_hypotheses_pass_through():
    out = combine([(words("a b c"), 1.0)] * 3)
    assert out.text == "a b c" and out.confidences == (1.0, 1.0, 1.0)


def test_substitution_is_outvoted():
    assert combine([(words("a b c d"), 1), (words("a b x d"), 1), (words("a b c d"), 1)]).text == "a b c d"


def test_an_extra_word_does_not_shift_later_slots():
    # position-wise voting would compare "x" with "a", "a" with "b", ... and wreck the whole line
    hyps = [(words("x a b c d"), 1.0), (words("a b c d"), 0.9), (words("a b c d"), 0.8)]
    out = combine(hyps)
    assert out.text == "a b c d"
    assert out.n_slots == 5  # the inserted word kept its own slot, voted down by two null arcs


def test_a_missing_word_is_restored_or_dropped_by_weight():
    assert combine([(words("a b c d"), 1), (words("a c d"), 1), (words("a c d"), 1)]).text == "a c d"
    assert combine([(words("a b c d"), 1), (words("a b c d"), 1), (words("a c d"), 1)]).text == "a b c d"


def test_weights_decide():
    assert combine([(words("a b"), 0.6), (words("a c"), 0.3), (words("a c"), 0.2)]).text == "a b"
    heavier = combine([(words("a b"), 0.6), (words("a c"), 0.35), (words("a c"), 0.35)])
    assert heavier.text == "a c"
    assert heavier.confidences[1] == pytest.approx(0.7 / 1.3)


def test_ties_go_to_the_heaviest_hypothesis_word():
    assert combine([(words("a b"), 1.0), (words("a c"), 1.0)]).text == "a b"
    assert combine([(words("a c"), 1.0), (words("a b"), 1.0)]).text == "a c"


def test_nothing_to_combine():
    assert combine([]).text == "" and combine([(words("a"), 0.0)]).words == ()


def draw(i: int, action: Action, answer: str | None, p: float) -> Reflection:
    rest = (1 - p) / 2
    return Reflection(
        action=action,
        probs={a: (p if a is action else rest) for a in Action},
        raw_token=action.token,
        policy="test",
        answer=answer,
        sample_index=i,
    )


def test_groups_by_normalised_answer_and_counts_weights():
    draws = [
        draw(0, Action.INTERNAL, "The cat sat.", 0.6),
        draw(1, Action.EXTERNAL, "the cat sat", 0.7),
        draw(2, Action.EXTERNAL, "a cat sat", 0.9),
    ]
    result = majority_vote(draws)
    assert result.key == "the cat sat" and result.tally["the cat sat"] == pytest.approx(1.3)
    assert result.tie_broken_by is None
    assert sum(result.decision.probs.values()) == pytest.approx(1.0)
    assert "majority-vote" in result.decision.policy
    # the representative draw of the winning group is its most confident one
    assert result.decision.action is Action.EXTERNAL and result.decision.sample_index == 1


def test_unweighted_vote_counts_draws():
    draws = [
        draw(0, Action.INTERNAL, "x", 0.99),
        draw(1, Action.EXTERNAL, "y", 0.4),
        draw(2, Action.EXTERNAL, "y", 0.4),
    ]
    assert majority_vote(draws, weighted=True).key == "x"
    assert majority_vote(draws, weighted=False).key == "y"


def test_tie_rule_order():
    # equal weight, more draws wins
    by_count = [
        draw(0, Action.INTERNAL, "x", 0.8),
        draw(1, Action.EXTERNAL, "y", 0.4),
        draw(2, Action.EXTERNAL, "y", 0.4),
    ]
    result = majority_vote(by_count)
    assert result.key == "y" and result.tie_broken_by == "count"
    # equal weight and count: action priority internal > external > rewrite
    by_action = [draw(0, Action.EXTERNAL, "y", 0.5), draw(1, Action.INTERNAL, "x", 0.5)]
    result = majority_vote(by_action)
    assert result.key == "x" and result.tie_broken_by == "action_priority"
    # everything equal: the lowest draw index
    by_index = [draw(0, Action.REWRITE, None, 0.5), draw(1, Action.REWRITE, "z", 0.5)]
    result = majority_vote(by_index)
    assert result.key == "<rewrite>" and result.tie_broken_by == "sample_index"


def test_vote_needs_draws():
    with pytest.raises(ValueError):
        majority_vote([])
