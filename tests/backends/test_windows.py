"""Cutting long real speech into segments, and the bounded batches of a backend's own long-audio N-best."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import dev_flac

from speech_hands.audio import load_audio
from speech_hands.backends.windows import LONG_PAUSE_S, nbest_over_windows, speech_segments, speech_spans

UTTS = ["2609-156975-0007", "3331-159605-0008", "2033-164914-0008", "1688-142285-0007", "533-1066-0000"]
SR = 16_000


@pytest.fixture(scope="module")
def speech(shared_data) -> np.ndarray:
    return np.concatenate([load_audio(dev_flac(u)).samples for u in UTTS])


def test_segments_tile_the_audio_and_stay_under_the_limit(speech):
    spans = speech_segments(speech, max_s=20.0)
    assert len(spans) >= 4
    assert spans[0][0] == 0 and spans[-1][1] == speech.size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # contiguous: no sample lost or doubled
    assert all(0 < e - s <= 20 * SR for s, e in spans)


def test_cuts_fall_in_pauses_not_in_words(speech):
    """Every cut lies outside the speech voice-activity detection found (all of these have pauses)."""
    voiced = speech_spans(speech)
    for _, cut in speech_segments(speech, max_s=20.0)[:-1]:
        assert not any(s < cut < e for s, e in voiced), f"cut at {cut / SR:.2f} s is inside speech"


def test_a_long_pause_is_a_segment_of_its_own(speech):
    gap = np.zeros(int(8 * SR), np.float32)
    half = 12 * SR
    x = np.concatenate([speech[:half], gap, speech[half : half + 15 * SR]])
    spans = speech_segments(x, max_s=20.0)
    edge = SR // 5  # the speech on either side keeps its 100 ms of padding
    pause = [(s, e) for s, e in spans if e - s >= LONG_PAUSE_S * SR and np.abs(x[s + edge : e - edge]).max() < 1e-3]
    assert len(pause) == 1, spans
    s, e = pause[0]
    assert half <= s < half + SR and half + 7 * SR < e <= half + 8 * SR + edge


def test_short_audio_is_one_segment(speech):
    assert speech_segments(speech[: 20 * SR], max_s=20.0) == [(0, 20 * SR)]


def test_a_backend_decodes_long_audio_in_bounded_batches(speech):
    calls: list[int] = []

    def decode(windows):
        calls.append(len(windows))
        assert all(w.size <= 20 * SR for w in windows)
        return [[(f"w{len(calls)}.{i}", -0.1)] for i in range(len(windows))]

    hyps = nbest_over_windows(speech, decode, n_best=5, source="fake", batch=2)
    assert max(calls) <= 2 and sum(calls) == len(speech_segments(speech))
    assert hyps[0].text.startswith("w1.0 w1.1 w2.0")
