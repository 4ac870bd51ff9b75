"""The ASR prompt (text said before the audio) reaches the Whisper backends: real tiny.en through
faster-whisper on real speech, and openai-whisper (a tiny random model) against whisper.decode itself."""

from __future__ import annotations

import pytest
import torch
import whisper
from helpers import dev_flac
from tiny_models import build_tiny_whisper

from speech_hands.audio import load_audio
from speech_hands.backends.base import takes_prompt
from speech_hands.backends.faster_whisper import PROMPT_TOKENS, FasterWhisperASR, _storage
from speech_hands.backends.openai_whisper import OpenAIWhisperASR

UTT = "1688-142285-0001"  # "margaret said mister hale ... when mister thornton made his confession ..."


@pytest.fixture(scope="module")
def tiny() -> FasterWhisperASR:
    return FasterWhisperASR(model="bundled:tiny.en", cpu_threads=2)


@pytest.mark.slow
def test_the_prompt_steers_faster_whisper_on_real_speech(tiny, shared_data):
    audio = load_audio(dev_flac(UTT))
    plain = tiny.transcribe(audio, n_best=1)[0].text
    prompted = tiny.transcribe(audio, n_best=1, prompt="Mister Bell spoke to Mister Hale and Mister Thornton.")[0].text
    assert "Mr. Hale" in plain and "Mister" not in plain  # without context tiny.en writes the abbreviation
    assert "Mister Hale" in prompted and "Mister Thornton" in prompted  # the prompt's spelling carries over
    assert "Bell" not in prompted  # the prompt itself is not part of the transcript


@pytest.mark.slow
def test_a_long_prompt_keeps_only_its_most_recent_tokens(tiny, shared_data):
    model = tiny.load()
    encoded = _storage(tiny.encode_windows([load_audio(dev_flac(UTT)).samples]))
    words = " ".join(f"word{i}" for i in range(400))
    tokens = tiny._prompt(model, encoded, words)
    plain = tiny._prompt(model, encoded, None)
    assert len(tokens) == 1 + PROMPT_TOKENS + len(plain)  # <|startofprev|>, the last 223 tokens, then as before
    assert tokens[-len(plain) :] == plain
    tokenizer_text = model.hf_tokenizer.decode(tokens[1 : 1 + PROMPT_TOKENS])
    assert tokenizer_text.rstrip().endswith("word399") and "word0 " not in tokenizer_text


def test_openai_whisper_passes_the_prompt_as_whisper_decode_does(tmp_path_factory, shared_data):
    checkpoint = build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-random.pt")
    asr = OpenAIWhisperASR(str(checkpoint), device="cpu", max_tokens=8, beam_size=5)
    audio = load_audio(dev_flac(UTT))
    prompt = "earlier words of the conversation"
    ours = asr.transcribe(audio, n_best=5, prompt=prompt)
    model = asr.load().model
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio.samples)), model.dims.n_mels)
    options = whisper.DecodingOptions(
        language="en", beam_size=5, without_timestamps=True, sample_len=8, fp16=False, prompt=" " + prompt
    )
    best = whisper.decode(model, mel, options)
    tokenizer = whisper.tokenizer.get_tokenizer(model.is_multilingual, num_languages=model.num_languages, language="en")
    best_text = tokenizer.decode([t for t in best.tokens if t < tokenizer.eot]).strip()
    assert not best_text or ours[0].text == best_text
    assert asr._options(5, prompt).prompt == " " + prompt and asr._options(5).prompt is None


def test_which_backends_take_a_prompt():
    assert takes_prompt(FasterWhisperASR.transcribe) and takes_prompt(OpenAIWhisperASR.transcribe)
    from speech_hands.backends.replay import ReplayASR

    assert not takes_prompt(ReplayASR.transcribe)
