"""Real Whisper transcription and N-best through faster-whisper on real speech (bundled weights)."""

from __future__ import annotations

import itertools

import jiwer
import numpy as np
import pytest
from helpers import dev_flac

from speech_hands.audio import audio_from_array, load_audio
from speech_hands.backends.faster_whisper import FasterWhisperASR, split_windows
from speech_hands.backends.weights import BASE_MODEL_BYTES, bundled_model_dir, resolve_model
from speech_hands.errors import ConfigurationError
from speech_hands.text import normalize_english

UTT = "1688-142285-0007"


def wer(reference: str, hypothesis: str) -> float:
    out = jiwer.process_words(normalize_english(reference), normalize_english(hypothesis))
    return out.wer


@pytest.fixture(scope="module")
def base() -> FasterWhisperASR:
    return FasterWhisperASR(model="bundled:base", cpu_threads=2)


@pytest.fixture(scope="module")
def tiny() -> FasterWhisperASR:
    return FasterWhisperASR(model="bundled:tiny.en", cpu_threads=2)


def test_bundled_base_is_joined_to_the_right_size():
    directory = bundled_model_dir("base")
    assert (directory / "model.bin").stat().st_size == BASE_MODEL_BYTES
    assert {"config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in directory.iterdir()}


def test_unknown_bundled_model_and_bad_directory(tmp_path):
    with pytest.raises(ConfigurationError, match="bundled models"):
        resolve_model("bundled:large-v9")
    with pytest.raises(ConfigurationError, match=r"model.bin"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("which", ["base", "tiny"])
def test_real_nbest_on_real_speech(which, base, tiny, dev_references):
    model = base if which == "base" else tiny
    # ranks, scores and ordering: test_backend_contract.py; here the real weights' N-best and accuracy
    hyps = model.transcribe(load_audio(dev_flac(UTT)), n_best=5)
    assert len(hyps) >= 3
    assert wer(dev_references[UTT], hyps[0].text) < 0.25


def test_models_load_once_per_process(base):
    twin = FasterWhisperASR(model="bundled:base", cpu_threads=2, name="another-name")
    assert twin.load() is base.load()
    assert base.is_multilingual and not FasterWhisperASR(model="bundled:tiny.en").is_multilingual


def test_long_audio_is_chunked_and_covers_both_ends(tiny, dev_references):
    uids = ["2609-156975-0007", "3331-159605-0008", "2033-164914-0008", "1688-142285-0007"]
    pieces = [load_audio(dev_flac(u)).samples for u in uids]
    audio = audio_from_array(np.concatenate(pieces), 16_000, utterance_id="long")
    assert audio.ref.duration_s > 60
    assert len(split_windows(audio.samples)) >= 3
    top = tiny.transcribe(audio, n_best=3)[0]
    words = normalize_english(top.text).split()
    first = normalize_english(dev_references[uids[0]]).split()
    last = normalize_english(dev_references[uids[-1]]).split()
    assert set(first[:4]) & set(words[:15]), "the start of the first utterance is transcribed"
    assert set(last[-4:]) & set(words[-15:]), "the end of the last utterance is transcribed"


def test_split_windows_cut_at_quiet_frames():
    rng = np.random.default_rng(0)
    samples = rng.standard_normal(16_000 * 70).astype(np.float32) * 0.3
    samples[16_000 * 27 : 16_000 * 27 + 1_600] = 0.0  # a 100 ms pause inside the search region
    spans = split_windows(samples)
    assert spans[0][1] == 16_000 * 27 + 800
    assert all(e - s <= 16_000 * 30 for s, e in spans)
    assert spans[-1][1] == samples.size and all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_8khz_spoken_digit(tiny, shared_data):
    hyps = tiny.transcribe(load_audio(shared_data / "fsdd" / "recordings" / "7_jackson_32.wav"), n_best=3)
    assert hyps and normalize_english(hyps[0].text) in {"7", "seven"}
