"""Rewrite strategies on hand-made candidate sets with known answers, and on real speech."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import dev_flac

from speech_hands.audio import load_audio, virtual_audio
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.learned.rescoring import PromptedCandidates, PromptedRedecodeRewriter, RescoringRewriter
from speech_hands.reflection.learned.scoring import CandidateScore
from speech_hands.reflection.rewrite import AlignmentVotingRewriter
from speech_hands.types import Hypothesis, ToolOutput


def output(tool: str, role: str, texts: list[str]) -> ToolOutput:
    hyps = [Hypothesis(text=t, score=-0.1 * (i + 1), source=tool, rank=i) for i, t in enumerate(texts)]
    return ToolOutput(tool=tool, role=role, hypotheses=hyps)  # type: ignore[arg-type]


class TableScorer:
    """A scorer that reads log-probabilities from a table (text -> (logprob, eot))."""

    def __init__(self, name: str, table: dict[str, tuple[float, float]]) -> None:
        self.asr = SimpleNamespace(name=name)
        self.table = table
        self.calls = 0

    def score(self, audio, texts):
        self.calls += 1
        return [
            CandidateScore(
                text=t,
                n_tokens=len(t.split()),
                logprob=self.table[t][0],
                eot_logprob=self.table[t][1],
                min_token_logprob=-1,
            )
            for t in texts
        ]


def inp_of(internal: ToolOutput, *externals: ToolOutput) -> ReflectionInput:
    return ReflectionInput(audio=virtual_audio("u"), question=None, internal=internal, externals=list(externals))


def test_rescoring_picks_the_candidate_both_models_prefer():
    internal = output("a", "internal", ["the quick brown fox", "the quick brown fax"])
    external = output("b", "external", ["a quick brown fox", "the quick brown fox jumps"])
    table = {
        "the quick brown fox": (-4.0, -2.0),  # stops too early: end-of-text unlikely
        "the quick brown fax": (-6.0, -0.2),
        "a quick brown fox": (-5.5, -0.3),
        "the quick brown fox jumps": (-4.5, -0.1),
    }
    rewriter = RescoringRewriter([TableScorer("m1", table), TableScorer("m2", table)], weights={"m1": 1.0, "m2": 0.5})
    result = rewriter.rewrite(inp_of(internal, external))
    assert result.text == "the quick brown fox jumps"
    assert result.source == "rewrite:rescore"
    # a per-word penalty flips it back to the shorter candidate
    short = RescoringRewriter([TableScorer("m1", table)], weights={"m1": 1.0, "words": -3.0})
    assert short.rewrite(inp_of(internal, external)).text in ("the quick brown fox", "a quick brown fox")


def test_rescoring_pools_case_and_punctuation_variants_and_caches():
    internal = output("a", "internal", ["Hello, world.", "hello word"])
    external = output("b", "external", ["hello world", "Hello word!"])
    table = {
        "Hello, world.": (-3.0, -0.1),
        "hello world": (-3.2, -0.1),
        "hello word": (-2.95, -0.1),
        "Hello word!": (-4.0, -0.1),
    }
    scorer = TableScorer("m", table)
    rewriter = RescoringRewriter([scorer], weights={"m": 1.0})
    inp = inp_of(internal, external)
    analysis = rewriter.analyse(inp)
    assert [c.text for c in analysis.pool.candidates] == ["hello world", "hello word"]
    # "hello word" (-3.05) beats each "hello world" surface alone (-3.1, -3.3), but the summed
    # probability of the two "hello world" surfaces (-2.50) beats both "hello word" ones (-2.75)
    assert rewriter.rewrite(inp).text == "Hello, world."  # shown with the first surface form seen
    rewriter.rewrite(inp)
    assert scorer.calls == 1  # the policy and the rewrite node share one scoring pass


def test_rescoring_handles_any_number_of_sources_and_failed_tools():
    internal = output("a", "internal", ["one two three"])
    failed = ToolOutput(tool="dead", role="external", hypotheses=[], error={"type": "X", "message": "down"})
    ext = [output(f"e{i}", "external", [f"one two {w}"]) for i, w in enumerate(["tree", "three", "free", "three"])]
    table = {"one two three": (-3, -0.1), "one two tree": (-2.5, -0.1), "one two free": (-4, -0.1)}
    rewriter = RescoringRewriter([TableScorer("m", table)], weights={"m": 1.0, "agree": 3.0})
    # "tree" scores better alone, but three of five sources agree on "three"
    assert rewriter.rewrite(inp_of(internal, failed, *ext)).text == "one two three"


def test_rescoring_without_scores_falls_back_to_alignment_vote():
    internal = output("a", "internal", ["a b c"])
    external = output("b", "external", ["a b c", "a x c"])

    class NoScores(TableScorer):
        def score(self, audio, texts):
            return None

    result = RescoringRewriter([NoScores("m", {})]).rewrite(inp_of(internal, external))
    assert result.text == "a b c" and "fallback:alignment-vote" in result.source


def test_a_scoring_model_that_raises_costs_the_learned_decision_not_the_utterance(caplog):
    """The scoring pass raising (a CTranslate2 error, out of memory...) is traced and both the learned
    policy and the rewrite fall back to their unscored forms: the confidence baseline and the vote."""
    from speech_hands.reflection.learned.policy import LearnedPolicy, ReflectorArtifact

    internal = output("whisper-base", "internal", ["a b c"])
    external = output("whisper-tiny.en", "external", ["a b c", "a x c"])

    class Broken(TableScorer):
        def score(self, audio, texts):
            self.calls += 1
            raise RuntimeError("CUDA out of memory")

    broken = Broken("whisper-base", {})
    rewriter = RescoringRewriter([broken, TableScorer("whisper-tiny.en", {"a b c": (-1, -1), "a x c": (-2, -1)})])
    policy = LearnedPolicy(ReflectorArtifact.load(), rewriter)
    inp = inp_of(internal, external)
    with caplog.at_level("WARNING"):
        decision = policy.reflect(inp)
    # the name says it fell back, so the routing graph notes it (no silent fallback)
    assert decision.policy == "learned-reflector(fallback:confidence-baseline)"
    assert "scoring pass failed (RuntimeError: CUDA out of memory)" in decision.rationale
    assert "scoring pass failed" in caplog.text
    rewritten = rewriter.rewrite(inp)
    assert rewritten.text == "a b c" and "fallback:alignment-vote" in rewritten.source
    assert broken.calls == 1  # the policy and the rewrite share one (failed) analysis


def test_alignment_vote_on_a_known_alignment():
    # one insertion and one substitution: position-wise voting would misalign everything after it
    internal = output("a", "internal", ["the cat sat on the mat"])
    e1 = output("b", "external", ["the black cat sat on the mat"])
    e2 = output("c", "external", ["the cat sat in the mat"])
    result = AlignmentVotingRewriter().rewrite(inp_of(internal, e1, e2))
    assert result.text == "the cat sat on the mat"


@pytest.mark.slow
def test_prompted_redecode_on_real_speech():
    from speech_hands.backends.faster_whisper import FasterWhisperASR

    audio = load_audio(dev_flac("1688-142285-0002"))
    base = FasterWhisperASR(model="bundled:base", name="whisper-base", cpu_threads=2)
    internal = output("whisper-base", "internal", ["You don't mean that you thought me so silly?"])
    external = output("whisper-tiny.en", "external", ["You don't mean that you thought me so silly."])
    inp = ReflectionInput(audio=audio, question=None, internal=internal, externals=[external])
    rewritten = PromptedRedecodeRewriter(PromptedCandidates(base)).rewrite(inp)
    assert "silly" in rewritten.text.lower() and rewritten.source == "rewrite:prompted-redecode"
