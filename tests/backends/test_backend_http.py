"""The HTTP client of the server backends against real loopback servers: retries with backoff on 500,
timeouts, non-retryable errors, and the /v1/audio/transcriptions ASR tool served by a real (tiny) Whisper."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import soundfile as sf
from helpers import dev_flac
from loopback import parse_multipart, serve

from speech_hands.audio import load_audio
from speech_hands.backends.openai_server import HTTPClient, OpenAIServerASR
from speech_hands.errors import ToolFailure


def test_retries_500_with_backoff_then_succeeds():
    calls = []

    def handle(_, body):
        calls.append(time.perf_counter())
        return (500, {"error": "busy"}) if len(calls) < 3 else (200, {"ok": True, "echo": json.loads(body)})

    with serve(handle) as url:
        client = HTTPClient(url, max_retries=3, backoff_s=0.1)
        assert client.post("/chat/completions", json={"x": 1}) == {"ok": True, "echo": {"x": 1}}
    assert len(calls) == 3 and client.attempts == 3
    gaps = np.diff(calls)
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 0.1 s, then 0.2 s


def test_timeouts_are_retried_then_reported():
    calls = []

    def handle(_, body):
        calls.append(1)
        time.sleep(0.6)
        return 200, {"late": True}

    with serve(handle) as url:
        client = HTTPClient(url, timeout_s=0.2, max_retries=1, backoff_s=0.05)
        started = time.perf_counter()
        with pytest.raises(ToolFailure, match=r"after 2 attempts.*no answer within 0.2 s"):
            client.post("/chat/completions", json={})
        assert time.perf_counter() - started < 2.0
    assert len(calls) == 2


def test_client_errors_are_not_retried_and_carry_the_server_message():
    calls = []

    def handle(_, body):
        calls.append(1)
        return 404, {"error": "model 'nope' does not exist"}

    with serve(handle) as url, pytest.raises(ToolFailure, match=r"HTTP 404.*does not exist"):
        HTTPClient(url, max_retries=3, backoff_s=0.01).post("/chat/completions", json={})
    assert len(calls) == 1


def test_unreachable_server_is_a_tool_failure():
    with serve(lambda h, b: (200, {})) as url:
        dead = url
    with pytest.raises(ToolFailure, match="failed after 2 attempts"):
        HTTPClient(dead, max_retries=1, backoff_s=0.01, timeout_s=1).post("/chat/completions", json={})


def test_transcription_endpoint_served_by_a_real_whisper(tmp_path):
    """An OpenAI-style /v1/audio/transcriptions server wrapping the tiny openai-whisper model."""
    from tiny_models import build_tiny_whisper

    from speech_hands.backends.openai_whisper import OpenAIWhisperASR

    local = OpenAIWhisperASR(str(build_tiny_whisper(tmp_path / "w.pt")), device="cpu", max_tokens=6)
    seen = {}

    def handle(handler, body):
        form = parse_multipart(handler.headers["Content-Type"], body)
        samples, rate = sf.read(io.BytesIO(form["file"]), dtype="float32")
        seen.update(model=form["model"].decode(), language=form["language"].decode(), rate=rate, n=samples.size)
        from speech_hands.audio import audio_from_array

        best = local.transcribe(audio_from_array(samples, rate, utterance_id="upload"), n_best=1)[0]
        return 200, {"text": best.text, "segments": [{"avg_logprob": best.score}]}

    audio = load_audio(dev_flac("1688-142285-0007"))
    with serve(handle) as url:
        asr = OpenAIServerASR("whisper-tiny-random", base_url=url, name="served-whisper")
        hyps = asr.transcribe(audio, n_best=5)
    direct = local.transcribe(audio, n_best=1)[0]
    assert seen == {"model": "whisper-tiny-random", "language": "en", "rate": 16_000, "n": audio.samples.size}
    assert len(hyps) == 1 and hyps[0].text == direct.text  # the API gives one transcript
    assert hyps[0].score == pytest.approx(direct.score, abs=1e-3)  # 16-bit WAV round trip
