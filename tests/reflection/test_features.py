"""Reflector features and cross-model scoring on real speech (bundled Whisper weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import dev_flac

from speech_hands.audio import load_audio
from speech_hands.reflection.learned.features import (
    AUDIO_FEATURES,
    audio_statistics,
    candidate_features,
    pool_from_outputs,
    reflector_features,
    word_distance,
)
from speech_hands.reflection.learned.scoring import WhisperScorer
from speech_hands.text import normalize_english
from speech_hands.types import Hypothesis, ToolOutput

UTT = "1688-142285-0002"  # "you don't mean that you thought me so silly"


def output(tool: str, role: str, texts: list[str], scores: list[float] | None = None) -> ToolOutput:
    scores = scores or [-0.1 * (i + 1) for i in range(len(texts))]
    hyps = [Hypothesis(text=t, score=s, source=tool, rank=i) for i, (t, s) in enumerate(zip(texts, scores))]
    return ToolOutput(tool=tool, role=role, hypotheses=hyps)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def audio():
    return load_audio(dev_flac(UTT))


@pytest.fixture(scope="module")
def scorers():
    from speech_hands.backends.faster_whisper import FasterWhisperASR

    base = FasterWhisperASR(model="bundled:base", name="whisper-base", cpu_threads=2)
    tiny = FasterWhisperASR(model="bundled:tiny.en", name="whisper-tiny.en", cpu_threads=2)
    return WhisperScorer(base), WhisperScorer(tiny)


def test_audio_statistics_on_real_speech(audio):
    stats = audio_statistics(audio.samples)
    assert set(stats) == set(AUDIO_FEATURES)
    assert stats["duration_s"] == pytest.approx(audio.ref.duration_s, abs=0.01)
    assert stats["snr_proxy"] > 0.2  # speech has loud and quiet frames
    noisy = audio.samples + np.random.default_rng(0).normal(0, 0.05, audio.samples.size).astype(np.float32)
    assert audio_statistics(noisy)["snr_proxy"] < stats["snr_proxy"]  # noise fills the pauses
    assert audio_statistics(None)["duration_s"] == 0.0


def test_scorer_prefers_the_true_text_and_counts_end_of_text(audio, scorers):
    base, _ = scorers
    right, wrong, cut = (
        "You don't mean that you thought me so silly?",
        "You don't mean that you bought me so silly?",
        "You don't mean that you thought",
    )
    scores = base.score(audio, [right, wrong, cut])
    assert scores is not None
    s_right, s_wrong, s_cut = scores
    assert s_right.total > s_wrong.total
    # without end-of-text the truncated text looks more likely (fewer tokens); with it, it does not
    assert s_cut.logprob > s_right.logprob
    assert s_cut.eot_logprob < -3 and s_right.eot_logprob > -1
    assert s_right.n_tokens > s_cut.n_tokens
    again = base.score(audio, [right])  # cached: same object values
    assert again is not None and again[0] == s_right


def test_scoring_reuses_the_encoder_states_perception_computed(audio, scorers):
    """Perception, the scorer and another backend object on the same model share one encoding."""
    from speech_hands.backends.faster_whisper import FasterWhisperASR

    base, _ = scorers
    asr = base.asr
    cache = asr.encoder_cache
    cache.clear()
    hyps = asr.transcribe(audio, n_best=3)
    misses = cache.misses
    text = hyps[0].text + " (uncached)"  # a text not scored before: forces the scoring pass
    hits = cache.hits
    assert base.score(audio, [text]) is not None
    assert (cache.hits, cache.misses) == (hits + 1, misses)  # served from perception's entry
    twin = FasterWhisperASR(model="bundled:base", name="twin", cpu_threads=2)
    assert twin.encoder_cache is cache  # same loaded model, same cache
    states = twin.encode_windows([audio.samples])
    assert states.shape[0] == 1 and np.isfinite(states).all()
    cache.clear()
    fresh = asr.encode_windows([audio.samples])
    np.testing.assert_array_equal(fresh, states)  # the cached states are the encoder's own output


def test_target_logprobs_equal_a_full_log_softmax():
    from speech_hands.reflection.learned.scoring import _target_logprobs

    logits = np.random.default_rng(1).normal(0, 8, (6, 51865)).astype(np.float32)
    targets = [5, 17, 51000, 0, 3, 42]
    full = logits.astype(np.float64)
    full = full - full.max(axis=1, keepdims=True)
    full = full - np.log(np.exp(full).sum(axis=1, keepdims=True))
    expected = full[np.arange(6), targets]
    np.testing.assert_allclose(_target_logprobs(logits, targets), expected, atol=1e-5)
    # only the first len(targets) rows are read: extra rows CTranslate2 returns are ignored
    np.testing.assert_allclose(_target_logprobs(logits, targets[:3]), expected[:3], atol=1e-5)


def test_scorer_returns_none_without_audio():
    from speech_hands.audio import virtual_audio

    assert WhisperScorer("bundled:tiny.en").score(virtual_audio("x"), ["hello"]) is None


def test_pool_dedupes_surface_variants_and_scores_them(audio, scorers):
    internal = output(
        "whisper-base",
        "internal",
        ["You don't mean that you thought me so silly?", "you don't mean that you thought me so silly"],
    )
    external = output(
        "whisper-tiny.en",
        "external",
        ["You don't mean that you thought me so silly.", "You don't mean that you taught me so silly."],
    )
    by_name = {s.asr.name: s for s in scorers}
    pool = pool_from_outputs(
        internal, [external], normalize_english, lambda name, texts: by_name[name].score(audio, texts), list(by_name)
    )
    assert len(pool.candidates) == 2  # three surfaces of the right text are one candidate
    right = pool.candidates[0]
    assert len(right.surfaces) == 3 and right.ranks == {"whisper-base": 0, "whisper-tiny.en": 0}
    assert pool.scored and pool.support(right) == 1.0
    assert right.totals["whisper-base"] > pool.candidates[1].totals["whisper-base"]
    feats = candidate_features(right, pool)
    assert feats["in_internal"] == 1.0 and feats["external_rank"] == 0.0


def test_reflector_features_are_fixed_length_for_any_number_of_sources():
    internal = output("int", "internal", ["a b c d"])
    one = [output("ext1", "external", ["a b x d", "a b c d"])]
    three = [*one, output("ext2", "external", ["a b c"]), output("ext3", "external", ["a y c d"])]
    names = None
    for externals in (one, three, []):
        pool = pool_from_outputs(internal, externals, normalize_english)
        feats, chosen = reflector_features(pool, internal, externals, {}, {"words": 1.0})
        assert all(math.isfinite(v) for v in feats.values())
        names = names or sorted(feats)
        assert sorted(feats) == names
        assert chosen["internal"] == 0
    assert word_distance(["a", "b", "c"], ["a", "x", "c", "d"]) == 2
