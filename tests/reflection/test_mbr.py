"""Minimum-Bayes-risk selection: known answers on hand-made pools, the posterior, determinism, and
the shipped MBR artifact driving the learned policy."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from speech_hands.audio import virtual_audio
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.learned.mbr import Selection, expected_risk, pairwise_word_errors, posterior
from speech_hands.reflection.learned.policy import LearnedPolicy, ReflectorArtifact, merge_same_answers
from speech_hands.reflection.learned.rescoring import RescoringRewriter
from speech_hands.reflection.learned.scoring import CandidateScore
from speech_hands.types import Action, Hypothesis, ToolOutput

OUTLIER = "we will go there now"
CONSENSUS = "the cat sat on the mat"
# log P(text, eot) under one scorer: the outlier scores best, three near-identical texts share the rest
TABLE = {OUTLIER: -3.0, CONSENSUS: -3.3, "the cat sat on a mat": -3.4, "a cat sat on the mat": -3.5}


class TableScorer:
    def __init__(self, name: str, table: dict[str, float]) -> None:
        self.asr = SimpleNamespace(name=name)
        self.table = table

    def score(self, audio, texts):
        return [
            CandidateScore(
                text=t, n_tokens=len(t.split()), logprob=self.table[t], eot_logprob=0.0, min_token_logprob=-1
            )
            for t in texts
        ]


def output(tool: str, role: str, texts: list[str]) -> ToolOutput:
    hyps = [Hypothesis(text=t, score=-0.1 * (i + 1), source=tool, rank=i) for i, t in enumerate(texts)]
    return ToolOutput(tool=tool, role=role, hypotheses=hyps)  # type: ignore[arg-type]


def make_input() -> ReflectionInput:
    internal = output("whisper-base", "internal", [OUTLIER, CONSENSUS])
    external = output("whisper-tiny.en", "external", ["the cat sat on a mat", "a cat sat on the mat"])
    return ReflectionInput(audio=virtual_audio("u"), question=None, internal=internal, externals=[external])


def rewriter(mode: str, alpha: float = 1.0) -> RescoringRewriter:
    return RescoringRewriter(
        [TableScorer("whisper-base", TABLE)], weights={"whisper-base": 1.0}, selection=Selection(mode, alpha)
    )  # type: ignore[list-item]


def test_mbr_picks_the_consensus_where_map_picks_the_outlier():
    inp = make_input()
    assert rewriter("map").rewrite(inp).text == OUTLIER
    mbr = rewriter("mbr", alpha=1.0)
    assert mbr.rewrite(inp).text == CONSENSUS
    analysis = mbr.analyse(inp)
    texts = [c.text for c in analysis.pool.candidates]
    # the expected risk of the consensus, by hand: 6 errors against the outlier, 1 against each variant
    p = np.exp([TABLE[t] for t in texts])
    p /= p.sum()
    hand = (
        6 * p[texts.index(OUTLIER)]
        + 1 * p[texts.index("the cat sat on a mat")]
        + 1 * p[texts.index("a cat sat on the mat")]
    )
    assert analysis.risk[texts.index(CONSENSUS)] == pytest.approx(hand)
    assert analysis.risk[texts.index(OUTLIER)] > analysis.risk[texts.index(CONSENSUS)]
    # a very sharp posterior is MAP again
    assert rewriter("mbr", alpha=50.0).rewrite(inp).text == OUTLIER


def test_posterior_sums_to_one_and_interpolates_between_uniform_and_map():
    scores = [-3.0, -3.3, -3.4, -10.0]
    for alpha in (0.0, 0.3, 1.0, 5.0):
        p = posterior(scores, alpha)
        assert p.sum() == pytest.approx(1.0) and (p >= 0).all()
    np.testing.assert_allclose(posterior(scores, 0.0), 0.25)
    assert posterior(scores, 200.0)[0] == pytest.approx(1.0)
    assert posterior([], 1.0).size == 0
    analysis = rewriter("mbr", 0.3).analyse(make_input())
    assert analysis.posterior.sum() == pytest.approx(1.0)


def test_pairwise_word_errors_are_known_counts_and_symmetric():
    cands = (("a", "b", "c"), ("a", "x", "c", "d"), (), ("a", "b", "c"))
    e = pairwise_word_errors(cands)
    assert e[0, 1] == e[1, 0] == 2  # one substitution, one insertion
    assert e[0, 2] == 3 and e[2, 1] == 4  # an empty candidate: the other's length
    assert e[0, 3] == 0 and np.all(np.diag(e) == 0)
    np.testing.assert_allclose(expected_risk(e, np.array([0.5, 0.5, 0.0, 0.0])), [1.0, 1.0, 3.5, 1.0])
    with pytest.raises(ValueError):
        e[0, 1] = 5  # cached: read-only


def test_mbr_is_deterministic_and_breaks_ties_by_score_then_order():
    inp = make_input()
    a, b = rewriter("mbr", 0.3).analyse(inp), rewriter("mbr", 0.3).analyse(inp)
    assert a.best == b.best and np.array_equal(a.risk, b.risk) and np.array_equal(a.posterior, b.posterior)
    # two candidates at the same risk (symmetric pair, alpha 0): the better-scored one wins
    internal = output("whisper-base", "internal", ["x y", "x z"])
    table = {"x y": -2.0, "x z": -1.0}
    tie = RescoringRewriter([TableScorer("m", table)], weights={"m": 1.0}, selection=Selection("mbr", 0.0))  # type: ignore[list-item]
    assert (
        tie.rewrite(ReflectionInput(audio=virtual_audio("t"), question=None, internal=internal, externals=[])).text
        == "x z"
    )
    with pytest.raises(ValueError):
        Selection("argmax")  # type: ignore[arg-type]


def test_merge_same_answers_gives_the_mass_to_the_first_action_in_tie_order():
    np.testing.assert_allclose(merge_same_answers([0.2, 0.3, 0.5], [4, 7, 4]), [0.7, 0.3, 0.0])
    np.testing.assert_allclose(merge_same_answers([0.2, 0.3, 0.5], [4, 7, 7]), [0.2, 0.8, 0.0])
    np.testing.assert_allclose(merge_same_answers([0.2, 0.3, 0.5], [None, 7, 9]), [0.2, 0.3, 0.5])


def test_shipped_artifact_is_mbr_and_routes_a_consensus_to_rewrite():
    art = ReflectorArtifact.load()
    assert art.selection == "mbr" and 0 < art.alpha < 10
    assert art.selection_rule() == Selection("mbr", art.alpha)
    assert set(art.features) >= {"risk_internal", "risk_external", "risk_rewrite"}
    scorers = [TableScorer(name, TABLE) for name in art.scorers]
    rw = RescoringRewriter(scorers, weights=art.weights, selection=art.selection_rule())  # type: ignore[arg-type]
    policy = LearnedPolicy(art, rw)
    # the internal top-1 is the outlier, the external side proposes the two variants, and only the
    # internal 2nd-best is the consensus: neither top answer is the least risky one -> <rewrite>
    inp = make_input()
    decision = policy.reflect(inp)
    assert sum(decision.probs.values()) == pytest.approx(1.0)
    assert all(math.isfinite(p) and 0 <= p <= 1 for p in decision.probs.values())
    assert decision.action is Action.REWRITE and decision.answer == CONSENSUS
    assert rw.rewrite(inp).text == CONSENSUS
    assert policy.reflect(inp) == decision  # deterministic
