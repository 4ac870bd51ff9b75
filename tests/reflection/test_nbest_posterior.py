"""The fast default: the pool's posterior from the tools' own N-best scores (no scoring pass, no
prompted re-decode), the artifact that carries it, and train/serve parity on real Whisper."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import dev_flac

from speech_hands.audio import load_audio, virtual_audio
from speech_hands.errors import ConfigurationError
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.learned.features import (
    NBEST_SCORER,
    NBestPosterior,
    pool_from_outputs,
    token_count,
    tools_agree,
)
from speech_hands.reflection.learned.policy import LearnedPolicy, ReflectorArtifact, build_learned
from speech_hands.reflection.learned.rescoring import RescoringRewriter
from speech_hands.text import normalize_english
from speech_hands.types import Action, Hypothesis, ToolOutput


def output(tool: str, role: str, hyps: list[tuple[str, float | None]]) -> ToolOutput:
    return ToolOutput(
        tool=tool,
        role=role,  # type: ignore[arg-type]
        hypotheses=[Hypothesis(text=t, score=s, source=tool, rank=i) for i, (t, s) in enumerate(hyps)],
    )


def softmax(x: list[float], alpha: float) -> np.ndarray:
    z = np.exp(alpha * (np.array(x) - max(x)))
    return z / z.sum()


def logp(text: str, score: float) -> float:
    return score * (token_count(text) + 1)


def test_the_posterior_is_the_weighted_mixture_of_each_tools_own_softmax():
    # base: two surfaces of one candidate ("The cat sat." / "the cat sat") and one other; tiny: one of each
    base = output("whisper-base", "internal", [("The cat sat.", -0.2), ("the cat sat", -0.3), ("a cat sat", -0.4)])
    tiny = output("whisper-tiny.en", "external", [("A cat sat.", -0.1), ("the hat sat", -0.5)])
    nbest = NBestPosterior(weights={"whisper-base": 1.0, "whisper-tiny.en": 0.5}, alpha=0.7)
    pool = pool_from_outputs(base, [tiny], normalize_english)
    assert [c.text for c in pool.candidates] == ["the cat sat", "a cat sat", "the hat sat"]
    q_base = softmax(
        [np.logaddexp(logp("The cat sat.", -0.2), logp("the cat sat", -0.3)), logp("a cat sat", -0.4)], 0.7
    )
    q_tiny = softmax([logp("A cat sat.", -0.1), logp("the hat sat", -0.5)], 0.7)
    expected = np.array([2 / 3 * q_base[0], 2 / 3 * q_base[1] + 1 / 3 * q_tiny[0], 1 / 3 * q_tiny[1]])
    p = nbest.posterior(pool)
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert p.sum() == pytest.approx(1.0)
    # fill(): the pseudo-scorer holds log p, so the rescoring and MBR code downstream read p back
    nbest.fill(pool)
    assert pool.scored and pool.scorers == [NBEST_SCORER]
    np.testing.assert_allclose([math.exp(c.totals[NBEST_SCORER]) for c in pool.candidates], expected, rtol=1e-12)


def test_unscored_tools_are_uniform_and_unweighted_tools_count_nothing():
    base = output("whisper-base", "internal", [("one two", None), ("one too", None)])
    other = output("other", "external", [("won two", -0.1)])
    p = NBestPosterior(weights={"whisper-base": 1.0}).posterior(pool_from_outputs(base, [other], normalize_english))
    np.testing.assert_allclose(p, [0.5, 0.5, 0.0])
    with pytest.raises(ValueError):
        NBestPosterior(weights={"whisper-base": 0.0})
    with pytest.raises(ValueError):
        NBestPosterior(weights={"whisper-base": 1.0}, alpha=0.0)


class _Refuses:
    """A scorer that must never be called."""

    asr = SimpleNamespace(name="whisper-base")

    def score(self, audio, texts):
        raise AssertionError("the N-best posterior must not run a scoring pass")


def test_the_rewrite_picks_the_mbr_consensus_of_the_nbest_posterior_without_a_scorer():
    # base's top-1 is an outlier; three near-identical candidates share the rest of the mass
    base = output("whisper-base", "internal", [("we will go there now", -0.10), ("the cat sat on the mat", -0.12)])
    tiny = output("whisper-tiny.en", "external", [("the cat sat on a mat", -0.1), ("a cat sat on the mat", -0.11)])
    inp = ReflectionInput(audio=virtual_audio("u"), question=None, internal=base, externals=[tiny])
    nbest = NBestPosterior(weights={"whisper-base": 1.0, "whisper-tiny.en": 1.0}, alpha=1.0)
    rewriter = RescoringRewriter([], nbest=nbest)
    analysis = rewriter.analyse(inp)
    np.testing.assert_allclose(analysis.posterior, nbest.posterior(analysis.pool), rtol=1e-9)
    assert analysis.best == int(np.argmin(analysis.risk))
    rewritten = rewriter.rewrite(inp)
    assert rewritten.text == "the cat sat on the mat" and rewritten.score is None
    assert rewriter.name == "mbr-nbest"


def test_the_fast_artifact_builds_a_policy_with_no_scorer_and_no_redecode():
    fast, full = ReflectorArtifact.load("fast"), ReflectorArtifact.load("full")
    assert fast.nbest is not None and not fast.scorers and not fast.prompted and full.nbest is None
    assert full.checksum() == ReflectorArtifact.load().checksum() != fast.checksum()
    assert fast.recipe_hash == full.recipe_hash  # the same recipe; the config is --rewrite nbest-mbr/risk
    internal, external = SimpleNamespace(name="whisper-base"), SimpleNamespace(name="whisper-tiny.en")
    policy, rewriter = build_learned(internal, [external], artifact="fast")
    assert policy.rewriter is rewriter
    assert rewriter.scorers == {} and rewriter.generators == [] and rewriter.nbest == fast.nbest_posterior()
    with pytest.raises(ConfigurationError, match="pool lacks"):
        build_learned(internal, [SimpleNamespace(name="another-asr")], artifact="fast")


@pytest.mark.slow
def test_the_default_agent_decides_from_perception_alone_as_the_recipe_does(monkeypatch, tmp_path):
    """Real Whisper on real utterances: the default agent makes no scoring call and no re-decode, and
    its answer and action are exactly what the training code computes from the same two N-best lists
    (the CV numbers in docs/reflector.md are made by that code)."""
    from speech_hands import SpeechHands
    from speech_hands.reflection.learned.rescoring import PromptedCandidates
    from speech_hands.reflection.learned.scoring import WhisperScorer
    from speech_hands.training.corpus import TrainingItem
    from speech_hands.training.fitting import NBEST_SELECTION, NBEST_WEIGHTS, LinearReflector, decide, make_examples
    from speech_hands.training.fitting import matrix as feature_matrix
    from speech_hands.training.records import PoolRecord

    def refuse(*args, **kwargs):
        raise AssertionError("the fast default must not score or re-decode")

    monkeypatch.setattr(WhisperScorer, "score", refuse)
    monkeypatch.setattr(PromptedCandidates, "generate", refuse)
    art = ReflectorArtifact.load("fast")
    model = LinearReflector(
        art.features, np.array(art.mean), np.array(art.scale), np.array(art.coef), np.array(art.intercept)
    )
    model.temperature = art.temperature
    with SpeechHands.default(trace_db=str(tmp_path / "t.sqlite"), cpu_threads=2) as agent:
        for uid in ("1998-15444-0000", "1688-142285-0004"):  # the fast agent rewrites / takes tiny.en here
            audio = load_audio(dev_flac(uid), utterance_id=uid)
            result = agent.invoke(audio)
            item = TrainingItem(id=uid, group="x", origin="librispeech", audio=str(dev_flac(uid)), reference="x")
            record = PoolRecord(
                item=item,
                pool_key="test",
                internal=result.internal,
                externals=[o for o in result.externals if o.ok],
                scores={},
                audio_stats={},
            )
            example = make_examples(
                [record], NBEST_WEIGHTS, prompted=False, selection=NBEST_SELECTION, nbest=art.nbest_posterior()
            )[0]
            action = decide(model.predict_proba(feature_matrix([example], art.features)), [example])[0]
            assert result.action == result.reflection.action == action
            assert normalize_english(result.answer) == example.answers[action]


# ---------------------------------------------------------------- the full artifact's scoring-pass gate


class _Counting(_Refuses):
    def __init__(self, name: str) -> None:
        self.asr = SimpleNamespace(name=name)
        self.calls = 0

    def score(self, audio, texts):
        from speech_hands.reflection.learned.scoring import CandidateScore

        self.calls += 1
        return [
            CandidateScore(text=t, n_tokens=len(t.split()), logprob=-1.0, eot_logprob=-0.1, min_token_logprob=-1)
            for t in texts
        ]


def test_the_gate_skips_the_scoring_pass_exactly_when_the_tools_agree():
    agree = output("whisper-base", "internal", [("The cat sat.", -0.1), ("the cat sat", -0.2), ("a cat sat", -0.3)])
    also = output("whisper-tiny.en", "external", [("the cat sat!", -0.1), ("the hat sat", -0.2)])
    differs = output("whisper-tiny.en", "external", [("the hat sat", -0.1), ("the cat sat", -0.2)])
    assert tools_agree(agree, [also], normalize_english, 3)  # top-1s equal; 3 distinct candidates
    assert not tools_agree(agree, [also], normalize_english, 2)  # too many distinct candidates
    assert not tools_agree(agree, [differs], normalize_english, 3)  # the top-1s differ
    assert not tools_agree(agree, [], normalize_english, 3)  # nothing to agree with

    full = ReflectorArtifact.load("full")
    for external, skipped in ((also, True), (differs, False)):
        scorers = [_Counting("whisper-base"), _Counting("whisper-tiny.en")]
        rewriter = RescoringRewriter(scorers, weights=full.weights, selection=full.selection_rule())  # type: ignore[arg-type]
        policy = LearnedPolicy(full, rewriter, gate=3)
        inp = ReflectionInput(
            audio=load_audio(dev_flac("1688-142285-0002")), question=None, internal=agree, externals=[external]
        )
        decision = policy.reflect(inp)
        assert (sum(s.calls for s in scorers) == 0) is skipped
        assert ("scoring pass skipped" in (decision.rationale or "")) is skipped
        if skipped:
            assert decision.action is Action.INTERNAL and decision.answer == "The cat sat."


@pytest.mark.slow
def test_on_real_speech_the_gated_answer_is_the_full_pass_answer(tmp_path):
    """Real Whisper, real utterances on which the gate holds: the full artifact's decision with the
    scoring pass (gate off) gives the very answer the gate returns without it."""
    from speech_hands import SpeechHands

    def agent(gate):
        omni = {
            "kind": "embedded",
            "reflector": "full",
            "predictor": {"kind": "faster-whisper", "model": "bundled:base"},
        }
        if gate is not None:
            omni["gate"] = gate
        config = {
            "agent": {"trace_db": str(tmp_path / f"{gate}.sqlite")},
            "omni": omni,
            "external": [{"kind": "faster-whisper", "model": "bundled:tiny.en"}],
            "preload": False,
        }
        return SpeechHands.from_config(config)

    with agent(None) as full, agent(3) as gated:
        for uid in ("3331-159605-0004", "1688-142285-0002"):  # the tools agree on both (measured)
            audio = load_audio(dev_flac(uid), utterance_id=uid)
            fast_result, full_result = gated.invoke(audio), full.invoke(audio)
            assert "scoring pass skipped" in (fast_result.reflection.rationale or "")
            assert "scoring pass skipped" not in (full_result.reflection.rationale or "")
            assert normalize_english(fast_result.answer) == normalize_english(full_result.answer)
