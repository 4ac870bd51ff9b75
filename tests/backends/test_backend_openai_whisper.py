"""The openai-whisper backend on a tiny random Whisper checkpoint file: load_model(path), N-best from
the beam, the 1-best equal to whisper.decode's, word timestamps, long audio, load errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
from helpers import dev_flac
from tiny_models import build_tiny_whisper

from speech_hands.audio import audio_from_array, load_audio
from speech_hands.backends.openai_whisper import OpenAIWhisperASR

UTT = "1688-142285-0007"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-random.pt")


@pytest.fixture(scope="module")
def asr(checkpoint) -> OpenAIWhisperASR:
    return OpenAIWhisperASR(str(checkpoint), device="cpu", max_tokens=8, beam_size=5)


@pytest.fixture(scope="module")
def audio():
    return load_audio(dev_flac(UTT))


def test_nbest_from_the_beam_and_top1_matches_whisper_decode(asr, audio):
    hyps = asr.transcribe(audio, n_best=5)  # ranks and scores: test_backend_contract.py
    assert 1 < len(hyps) <= 5
    model = asr.load().model
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio.samples)), model.dims.n_mels)
    options = whisper.DecodingOptions(language="en", beam_size=5, without_timestamps=True, sample_len=8, fp16=False)
    best = whisper.decode(model, mel, options)
    tokenizer = whisper.tokenizer.get_tokenizer(model.is_multilingual, num_languages=model.num_languages, language="en")
    best_text = tokenizer.decode([t for t in best.tokens if t < tokenizer.eot]).strip()
    # whisper.decode may pick a candidate that is empty text (only special tokens): the N-best drops
    # those, so its top-1 is whisper's choice whenever that choice has text
    assert hyps[0].text == best_text if best_text else all(h.text for h in hyps)


def test_sampling_asks_whisper_for_best_of_instead_of_a_beam(checkpoint):
    sampler = OpenAIWhisperASR(str(checkpoint), device="cpu", temperature=0.8, best_of=3, name="sampled")
    options = sampler._options(n_best=5)
    assert options.beam_size is None and options.best_of == 5 and options.temperature == 0.8
    beam = OpenAIWhisperASR(str(checkpoint), device="cpu", beam_size=3)._options(n_best=5)
    assert beam.beam_size == 5 and beam.best_of is None


def test_long_audio_is_windowed_and_combined(asr, audio):
    long = audio_from_array(np.concatenate([audio.samples] * 5), 16_000, utterance_id="long")
    hyps = asr.transcribe(long, n_best=3)
    one = asr.transcribe(audio, n_best=1)[0].text
    assert hyps and len(hyps[0].text) > len(one)  # two windows joined


def test_word_timestamps(asr, audio):
    words = asr.words(audio)
    assert words
    assert all(0 <= w.start <= w.end <= audio.ref.duration_s + 0.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
