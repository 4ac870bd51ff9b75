"""The CTranslate2 -> openai-whisper conversion is lossless: the converted tiny.en computes the same
encoder states and writes the same transcript as CTranslate2 on a real dev utterance, and the
converted checkpoint is cached with its checksums."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import dev_flac

from speech_hands.audio import load_audio
from speech_hands.backends.faster_whisper import FasterWhisperASR
from speech_hands.backends.weights import resolve_model
from speech_hands.backends.whisper_torch import WhisperSize, converted_checkpoint, ct2_size, load_torch_whisper
from speech_hands.errors import ConfigurationError

UTTERANCE = "1688-142285-0002"


@pytest.fixture(scope="module")
def converted():
    return load_torch_whisper("bundled:tiny.en")


def test_same_states_and_same_transcript_as_ctranslate2(converted, shared_data):
    import ctranslate2
    import torch
    import whisper

    model, meta = converted
    assert meta["source_sha256"] and meta["checkpoint_sha256"] and meta["dtype"] == "float16"
    audio = load_audio(dev_flac(UTTERANCE))
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio.samples)), 80)
    ct2 = FasterWhisperASR(model="bundled:tiny.en", compute_type="float32").load().model
    with torch.inference_mode():
        mine = model.encoder(mel[None]).numpy()
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel[None].numpy()), to_cpu=True))
    assert np.abs(mine - theirs).max() < 1e-3 * np.abs(theirs).max()  # float rounding only

    tokenizer = whisper.tokenizer.get_tokenizer(False)
    greedy = whisper.decode(model, mel, whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False))
    ids = ct2.generate(
        ctranslate2.StorageView.from_array(theirs),
        [list(tokenizer.sot_sequence_including_notimestamps)],
        beam_size=1,
        suppress_blank=True,
        suppress_tokens=[-1],
    )[0].sequences_ids[0]
    assert greedy.text == tokenizer.decode(ids).strip()

    beam = whisper.decode(
        model, mel, whisper.DecodingOptions(language="en", without_timestamps=True, beam_size=5, fp16=False)
    )
    assert beam.text == FasterWhisperASR(model="bundled:tiny.en").transcribe(audio, 5)[0].text  # the agent's tool


def test_cached_once_and_sizes_from_headers(converted):
    path, meta = converted_checkpoint("bundled:tiny.en")
    mtime = path.stat().st_mtime_ns
    again, _ = converted_checkpoint("bundled:tiny.en")
    assert again == path and again.stat().st_mtime_ns == mtime and meta["dims"]["n_vocab"] == 51864
    assert ct2_size(resolve_model("bundled:tiny.en")) == WhisperSize(4, 4, 384, 384)
    assert ct2_size(resolve_model("bundled:base")) == WhisperSize(6, 6, 512, 512)
    with pytest.raises(ConfigurationError, match=r"bundled:base, bundled:tiny\.en"):
        load_torch_whisper("large-v2")
