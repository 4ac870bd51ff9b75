"""Bad input: each case gives a clear AudioError or a traced, documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from doubles import CountingRewriter, FixedASR, ScriptedPolicy
from helpers import dev_flac, write_wav

from speech_hands import Action, AgentConfig, AudioError, SpeechHands
from speech_hands.audio import AudioStore, audio_from_array, load_audio
from speech_hands.backends.composed import ComposedOmni

UTT = "533-1066-0000"


def test_real_flac_loads_as_mono_16k(shared_data):
    audio = load_audio(dev_flac(UTT))
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.ref.sample_rate == 16_000 and audio.ref.channels == 1
    assert abs(audio.ref.duration_s - audio.samples.size / 16_000) < 1e-3
    assert len(audio.ref.sha256) == 64 and audio.ref.id == UTT and not audio.ref.silent


def test_missing_file():
    with pytest.raises(AudioError, match="not found"):
        load_audio("/definitely/not/here.wav")


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)


def test_non_audio_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are meeting notes, not audio\n" * 20)
    with pytest.raises(AudioError):
        load_audio(path)


def test_corrupt_audio_file(tmp_path):
    path = tmp_path / "corrupt.flac"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match=r"corrupt|cannot read|no audio"):
        load_audio(path)


def test_truncated_flac_loads_what_is_there_or_fails_clearly(tmp_path, shared_data):
    data = dev_flac(UTT).read_bytes()
    path = tmp_path / "truncated.flac"
    path.write_bytes(data[: len(data) // 3])
    try:
        audio = load_audio(path)
    except AudioError as exc:
        assert str(path) in str(exc)
    else:  # FFmpeg decodes the intact prefix: shorter than the original
        assert 0 < audio.ref.duration_s < load_audio(dev_flac(UTT)).ref.duration_s


def test_wav_with_no_samples(tmp_path):
    path = write_wav(tmp_path / "nothing.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match=r"no audio samples|empty|no audio"):
        load_audio(path)


def test_8khz_audio_is_resampled(shared_data):
    audio = load_audio(shared_data / "fsdd" / "recordings" / "7_jackson_32.wav")
    assert audio.ref.sample_rate == 8_000
    info = sf.info(str(shared_data / "fsdd" / "recordings" / "7_jackson_32.wav"))
    assert abs(audio.samples.size - info.frames * 2) <= 64  # twice the samples at 16 kHz


def test_stereo_audio_is_downmixed(tmp_path, shared_data):
    mono, sr = sf.read(str(dev_flac(UTT)), dtype="float32")
    stereo = np.stack([mono, np.zeros_like(mono)], axis=1)
    path = write_wav(tmp_path / "stereo.wav", stereo, sr)
    audio = load_audio(path)
    assert audio.ref.channels == 2 and audio.samples.ndim == 1
    assert np.allclose(audio.samples, mono / 2, atol=2e-3)  # average of the two channels


def test_too_long_audio_is_refused_before_decoding(tmp_path):
    path = write_wav(tmp_path / "long.wav", np.full(16_000 * 5, 0.1, dtype=np.float32))
    with pytest.raises(AudioError, match="over the limit"):
        load_audio(path, max_duration_s=2.0)


def test_array_input_resampled_and_checked():
    audio = audio_from_array(np.ones((8_000, 2), dtype=np.float32) * 0.1, 8_000)
    assert audio.samples.shape == (16_000,)
    with pytest.raises(AudioError, match="NaN"):
        audio_from_array(np.array([0.1, np.nan] * 100, dtype=np.float32), 16_000)


def test_store_reloads_from_path_when_cache_misses(shared_data):
    audio = load_audio(dev_flac(UTT))
    store = AudioStore(max_items=1)
    again = store.get(audio.ref)  # never put: reloads from the path and checks the hash
    assert np.array_equal(again.samples, audio.samples)


def test_silent_audio_skips_perception_with_a_traced_reason(tmp_path):
    path = write_wav(tmp_path / "silence.wav", np.zeros(16_000, dtype=np.float32))
    internal = FixedASR("internal-asr", ["thank you"])
    omni = ComposedOmni(internal, ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    with SpeechHands(omni, [], config=AgentConfig(trace_db=":memory:")) as agent:
        result = agent.invoke(path)
    assert result.action is None and result.answer == ""
    assert "silent" in result.skipped_reason
    assert internal.intervals == []  # no tool was called


def test_agent_raises_clear_error_for_missing_file(tmp_path):
    omni = ComposedOmni(FixedASR("i", ["x"]), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    with (
        SpeechHands(omni, [], config=AgentConfig(trace_db=":memory:")) as agent,
        pytest.raises(AudioError, match="not found"),
    ):
        agent.invoke(tmp_path / "nope.flac")
