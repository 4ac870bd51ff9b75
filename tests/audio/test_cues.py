"""The paralinguistic cues on real audio: speech synthesised by espeak-ng at two rates, a sox tone of
known f0, the same speech louder, a real pause, and silence. espeak-ng and sox are Debian packages
(.ci/run installs them); missing, these tests fail with the fix."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import write_wav

from speech_hands.audio import load_audio
from speech_hands.cues import measure_cues

SENTENCE = "the quick brown fox jumps over the lazy dog and then it runs far into the quiet forest"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: apt-get install espeak-ng sox (as .ci/run does)")
    return found


def _speech(tmp_path: Path, words_per_minute: int, name: str) -> np.ndarray:
    path = tmp_path / f"{name}.wav"
    subprocess.run([_tool("espeak-ng"), "-s", str(words_per_minute), "-w", str(path), SENTENCE], check=True)
    return load_audio(path).samples


def _sox(tmp_path: Path, name: str, *effects: str) -> np.ndarray:
    path = tmp_path / f"{name}.wav"
    subprocess.run([_tool("sox"), *effects[:1], "-r", "16000", "-c", "1", str(path), *effects[1:]], check=True)
    return load_audio(path).samples


def test_slow_speech_has_a_lower_rate_than_fast_speech(tmp_path):
    slow = measure_cues(_speech(tmp_path, 100, "slow"), SENTENCE)
    fast = measure_cues(_speech(tmp_path, 260, "fast"), SENTENCE)
    assert slow.words == fast.words == len(SENTENCE.split())
    assert not slow.no_speech and not fast.no_speech
    assert fast.speech_s < slow.speech_s
    assert slow.speaking_rate_wps < 3.0 < fast.speaking_rate_wps
    assert fast.speaking_rate_wps > 1.8 * slow.speaking_rate_wps


def test_louder_speech_has_more_dbfs(tmp_path):
    speech = _speech(tmp_path, 170, "normal")
    quiet, loud = measure_cues(speech * 0.1, SENTENCE), measure_cues(speech, SENTENCE)
    assert loud.loudness_dbfs - quiet.loudness_dbfs == pytest.approx(20.0, abs=0.5)  # x10 amplitude: +20 dB


def test_a_tone_of_known_f0_and_a_full_scale_sine(tmp_path):
    tone = _sox(tmp_path, "tone", "-n", "synth", "2", "sine", "150", "vol", "0.5")
    cues = measure_cues(tone)
    assert cues.pitch_low_hz == pytest.approx(150, rel=0.02) and cues.pitch_high_hz == pytest.approx(150, rel=0.02)
    assert cues.pitch_range_semitones < 0.3
    assert cues.loudness_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.3)  # a sine's RMS
    glide = measure_cues(_sox(tmp_path, "glide", "-n", "synth", "2", "sine", "100-200", "vol", "0.5"))
    assert 9.0 < glide.pitch_range_semitones < 12.5  # an octave is 12 semitones; the 5-95 % span a little less


def test_speech_pitch_is_in_the_voice_range(tmp_path):
    cues = measure_cues(_speech(tmp_path, 170, "voice"), SENTENCE)
    assert 60 <= cues.pitch_low_hz < cues.pitch_high_hz <= 400


def test_a_pause_between_two_sentences_is_counted_and_measured(tmp_path):
    speech = _speech(tmp_path, 170, "part")
    gap = np.zeros(int(0.8 * 16_000), dtype=np.float32)
    both = np.concatenate([speech, gap, speech])
    single, double = measure_cues(speech, SENTENCE), measure_cues(both, f"{SENTENCE} {SENTENCE}")
    assert double.pauses >= single.pauses + 1
    assert 0.75 <= double.longest_pause_s < 1.2  # the 0.8 s gap, plus the silence espeak leaves at the ends
    assert "pause" in double.as_text() and "longest" in double.as_text()


def test_silence_and_noise_are_no_speech(tmp_path):
    silence = measure_cues(np.zeros(16_000, dtype=np.float32), None)
    assert silence.no_speech and silence.speaking_rate_wps is None and silence.loudness_dbfs is None
    assert silence.as_text().startswith("no speech detected")
    noise = np.random.default_rng(0).normal(0, 0.01, 32_000).astype(np.float32)
    cues = measure_cues(noise, None)
    assert cues.no_speech and cues.pitch_low_hz is None  # white noise has no f0


def test_the_text_line_names_every_measured_cue(tmp_path):
    audio = write_wav(tmp_path / "s.wav", _speech(tmp_path, 170, "t"))
    text = measure_cues(load_audio(audio).samples, SENTENCE).as_text()
    for part in ("speaking rate", "words/s", "s of speech", "pause", "loudness", "dBFS", "pitch 5th-95th", "semitones"):
        assert part in text
