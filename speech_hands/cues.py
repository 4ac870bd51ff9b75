"""Paralinguistic cues of one utterance that can honestly be measured: rate, pauses, loudness, pitch range.

These are measurements of the signal, named for what they are, not guesses of emotion or intent. The
voice assistant (:mod:`speech_hands.graphs.assistant`) attaches them to every user turn and hands them
to the chat model as one line of text (:meth:`Cues.as_text`)::

    cues = measure_cues(audio.samples, transcript)
    cues.speaking_rate_wps, cues.pauses, cues.loudness_dbfs, cues.pitch_range_semitones, cues.no_speech

Definitions (16 kHz mono samples in [-1, 1]):

- **speech**: the spans Silero voice-activity detection (the model inside faster-whisper, threshold
  :data:`~speech_hands.audio.VAD_THRESHOLD`) finds, with gaps under :data:`PAUSE_S` joined.
  ``no_speech`` is true when it finds less than :data:`~speech_hands.audio.MIN_SPEECH_S` seconds.
- **speaking rate**: words of the turn's transcript per second of detected speech (pauses excluded).
- **pauses**: the gaps of at least :data:`PAUSE_S` between speech spans (silence before the first and
  after the last word is not a pause); their count and the longest, in seconds.
- **loudness**: the RMS level of the speech samples (all samples when there is no speech) in dBFS
  (0 dBFS: a full-scale square wave; a full-scale sine is -3 dBFS). It depends on the microphone and
  its gain as much as on the speaker: compare turns of one conversation, not speakers.
- **pitch**: the fundamental frequency (f0) of every voiced 40 ms frame (10 ms hop), estimated by
  normalised autocorrelation (the lag of the highest value between 1/:data:`F0_MAX_HZ` and
  1/:data:`F0_MIN_HZ`, refined by a parabola); a frame is voiced when that value is a peak (not at
  either end of the range: a falling autocorrelation's edge is no period), is at least
  :data:`VOICING` and the frame is no more than 30 dB below the loudest one. The 5th and 95th
  percentiles, and their distance in semitones, are reported when there are at least
  :data:`MIN_VOICED_FRAMES` voiced frames. Limits: a plain autocorrelation estimator, no tracking
  across frames; it can halve or double f0 on creaky or breathy voice, misses f0 under 60 Hz or
  over 400 Hz, and counts any periodic sound (a hum, a tone, music) as voiced.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from speech_hands.audio import MIN_SPEECH_S, SAMPLE_RATE, VAD_THRESHOLD

__all__ = ["Cues", "measure_cues", "speech_spans_for_cues"]

#: A gap between speech spans at least this long (seconds) is a pause.
PAUSE_S = 0.25
#: The pitch estimator's f0 search range (Hz) and frame geometry (seconds).
F0_MIN_HZ = 60.0
F0_MAX_HZ = 400.0
FRAME_S = 0.04
HOP_S = 0.01
#: Normalised autocorrelation peak a frame needs to count as voiced.
VOICING = 0.6
#: Voiced frames are at most this many dB below the loudest frame.
VOICED_FLOOR_DB = 30.0
#: Fewer voiced frames than this (0.1 s): no pitch figures.
MIN_VOICED_FRAMES = 10


class Cues(BaseModel):
    """Measured cues of one utterance (see the module docstring for each definition)."""

    model_config = ConfigDict(frozen=True)

    duration_s: float = Field(description="length of the audio (s)")
    speech_s: float = Field(description="detected speech (s)")
    no_speech: bool = Field(description="voice-activity detection found no speech")
    words: int = Field(description="words of the transcript")
    speaking_rate_wps: float | None = Field(default=None, description="words per second of detected speech")
    pauses: int = Field(default=0, description="gaps of at least PAUSE_S between speech spans")
    longest_pause_s: float = Field(default=0.0, description="the longest such gap (s)")
    loudness_dbfs: float | None = Field(default=None, description="RMS level of the speech samples (dBFS)")
    pitch_low_hz: float | None = Field(default=None, description="5th percentile f0 of voiced frames (Hz)")
    pitch_high_hz: float | None = Field(default=None, description="95th percentile f0 of voiced frames (Hz)")
    pitch_range_semitones: float | None = Field(default=None, description="12 log2(high / low)")

    def as_text(self) -> str:
        """The cues as the one line the chat model reads (docs/assistant.md, "Cues")."""
        parts = []
        if self.no_speech:
            parts.append("no speech detected")
        elif self.speaking_rate_wps is not None:
            parts.append(f"speaking rate {self.speaking_rate_wps:.1f} words/s over {self.speech_s:.1f} s of speech")
        else:
            parts.append(f"{self.speech_s:.1f} s of speech")
        if not self.no_speech:
            longest = f", longest {self.longest_pause_s:.2f} s" if self.pauses else ""
            parts.append(f"{self.pauses} pause{'s' if self.pauses != 1 else ''}{longest}")
        if self.loudness_dbfs is not None:
            parts.append(f"loudness {self.loudness_dbfs:.1f} dBFS")
        if self.pitch_low_hz is not None and self.pitch_high_hz is not None:
            parts.append(
                f"pitch 5th-95th percentile {self.pitch_low_hz:.0f}-{self.pitch_high_hz:.0f} Hz "
                f"({self.pitch_range_semitones:.1f} semitones)"
            )
        return "; ".join(parts)


def speech_spans_for_cues(samples: np.ndarray) -> list[tuple[int, int]]:
    """Speech spans (start, end) in samples: Silero VAD with gaps under :data:`PAUSE_S` joined, 30 ms padding."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if samples.size == 0:
        return []
    options = VadOptions(threshold=VAD_THRESHOLD, min_silence_duration_ms=int(PAUSE_S * 1000), speech_pad_ms=30)
    found = get_speech_timestamps(samples.astype(np.float32, copy=False), options, sampling_rate=SAMPLE_RATE)
    spans: list[tuple[int, int]] = []
    for span in found:
        start, end = int(span["start"]), int(span["end"])
        if spans and start - spans[-1][1] < PAUSE_S * SAMPLE_RATE:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


def _dbfs(samples: np.ndarray) -> float | None:
    if samples.size == 0:
        return None
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return round(20.0 * math.log10(rms), 2) if rms > 0 else None


def f0_track(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The f0 (Hz) of every voiced frame, in order (see the module docstring for the estimator). Frames
    are analysed :data:`CHUNK_FRAMES` at a time, so memory stays flat however long the audio is."""
    frame, hop = round(FRAME_S * sample_rate), round(HOP_S * sample_rate)
    if samples.size < frame:
        return np.zeros(0)
    view = np.lib.stride_tricks.sliding_window_view(samples, frame)[::hop]
    energy = np.concatenate([_energy(view[i : i + CHUNK_FRAMES]) for i in range(0, len(view), CHUNK_FRAMES)])
    if not (energy > 0).any():
        return np.zeros(0)
    floor = energy.max() * 10 ** (-VOICED_FLOOR_DB / 10)
    found = [
        _voiced_f0(view[i : i + CHUNK_FRAMES], energy[i : i + CHUNK_FRAMES], floor, sample_rate)
        for i in range(0, len(view), CHUNK_FRAMES)
    ]
    return np.concatenate(found) if found else np.zeros(0)


#: Frames analysed at once by :func:`f0_track` (about 10 MB of float64 per chunk).
CHUNK_FRAMES = 1000


def _energy(frames: np.ndarray) -> np.ndarray:
    centred = frames.astype(np.float64) - frames.mean(axis=1, keepdims=True)
    return np.sum(centred**2, axis=1)


def _voiced_f0(frames: np.ndarray, energy: np.ndarray, floor: float, sample_rate: int) -> np.ndarray:
    frame = frames.shape[1]
    centred = frames.astype(np.float64) - frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(centred * np.hanning(frame), n=2 * frame, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame]
    lag_min, lag_max = int(sample_rate / F0_MAX_HZ), min(int(sample_rate / F0_MIN_HZ), frame - 2)
    zero = np.where(acf[:, 0] > 0, acf[:, 0], 1.0)
    normalised = acf[:, lag_min : lag_max + 1] / zero[:, None]
    best = np.argmax(normalised, axis=1)
    peak = normalised[np.arange(len(best)), best]
    inside = (best > 0) & (best < normalised.shape[1] - 1)  # a maximum at the range's edge is no peak
    voiced = (peak >= VOICING) & (energy >= floor) & (energy > 0) & inside
    rows = np.flatnonzero(voiced)
    k = best[rows] + lag_min
    left, mid, right = acf[rows, k - 1], acf[rows, k], acf[rows, k + 1]
    denominator = left - 2 * mid + right
    curved = denominator < 0  # a peak: refine the lag to the parabola's vertex
    shift = np.where(curved, 0.5 * (left - right) / np.where(curved, denominator, -1.0), 0.0)
    return sample_rate / (k + np.clip(shift, -0.5, 0.5))


def measure_cues(samples: np.ndarray, transcript: str | None = None, *, sample_rate: int = SAMPLE_RATE) -> Cues:
    """The cues of 16 kHz mono ``samples`` whose transcript is ``transcript`` (rate needs it)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"cues are measured on {SAMPLE_RATE} Hz audio, not {sample_rate} Hz")
    spans = speech_spans_for_cues(samples)
    speech_s = sum(end - start for start, end in spans) / SAMPLE_RATE
    no_speech = speech_s < MIN_SPEECH_S
    gaps = [(b_start - a_end) / SAMPLE_RATE for (_, a_end), (b_start, _) in itertools.pairwise(spans)]
    gaps = [g for g in gaps if g >= PAUSE_S]
    words = len((transcript or "").split())
    speech = np.concatenate([samples[a:b] for a, b in spans]) if spans else samples
    f0 = f0_track(samples)
    pitch: dict[str, float] = {}
    if f0.size >= MIN_VOICED_FRAMES:
        low, high = (float(v) for v in np.percentile(f0, [5, 95]))
        pitch = {
            "pitch_low_hz": round(low, 1),
            "pitch_high_hz": round(high, 1),
            "pitch_range_semitones": round(12 * math.log2(high / low), 2),
        }
    return Cues(
        duration_s=round(samples.size / SAMPLE_RATE, 3),
        speech_s=round(speech_s, 3),
        no_speech=no_speech,
        words=words,
        speaking_rate_wps=round(words / speech_s, 2) if words and not no_speech else None,
        pauses=len(gaps),
        longest_pause_s=round(max(gaps), 3) if gaps else 0.0,
        loudness_dbfs=_dbfs(speech),
        **pitch,
    )
