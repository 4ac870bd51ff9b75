"""Loading, validating and normalising audio, and the per-process audio cache.

Every backend gets mono float32 audio at 16 kHz. Files are decoded with PyAV (FFmpeg's libraries,
shipped in the ``av`` wheel, so no ``ffmpeg`` binary is needed), which also resamples (e.g. 8 kHz
telephone audio) through libswresample; multi-channel audio is downmixed by averaging the channels.

Bad input is turned into :class:`~speech_hands.errors.AudioError` with a message that says what is
wrong and what to do. The documented behaviours:

- missing path, a directory, an empty (0-byte) file, a file FFmpeg cannot decode (corrupt or not
  audio), or a file that decodes to zero samples: ``AudioError``.
- longer than ``max_duration_s`` (default 1 hour): ``AudioError`` before decoding the whole file.
  Speech longer than one 30 s Whisper window is routed segment by segment
  (:mod:`speech_hands.graphs.segments`); the samples take 0.23 GB per hour of audio.
- samples that are NaN or infinite (float WAV files can hold them): ``AudioError``.
- audio in which voice-activity detection finds no speech (:func:`speech_seconds`: rain, a dog bark,
  a DC offset, a clip too short for a word): loads fine; a speech-recognition agent then answers
  with nothing and says why, instead of the text Whisper invents for it.
- all-silent audio (peak below ``SILENCE_PEAK``): loads fine and is flagged ``AudioRef.silent``; the
  graph then skips perception and returns an empty answer with ``skipped_reason`` (Whisper is known
  to hallucinate text on silence, so nothing is better than something here).

Raw samples never enter graph state: :class:`AudioStore` caches them by sha256, and reloads from the
file when a cache misses (e.g. a trace resumed in another process). A segment of a long input
(:func:`audio_segment`) is a view into the whole input's samples: the store serves it by slicing the
whole input, so routing a long file segment by segment holds its samples once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speech_hands.errors import AudioError, AudioTooLong
from speech_hands.types import AudioRef

log = logging.getLogger(__name__)

#: The sample rate every backend receives.
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class AudioInput:
    """Decoded audio handed to backends: mono float32 at 16 kHz, plus its reference.

    ``samples`` is ``None`` for a virtual reference (replay over recorded outputs, no audio)."""

    ref: AudioRef
    samples: np.ndarray | None

    @property
    def id(self) -> str:
        return self.ref.id

    def require_samples(self) -> np.ndarray:
        if self.samples is None:
            raise AudioError(
                f"input {self.ref.id!r} has no audio (virtual reference); this tool needs real audio. "
                "Pass an audio file, or use replay backends only."
            )
        return self.samples


#: Longest input accepted by default (seconds). Override per call or with ``SpeechHands(max_audio_s=...)``.
MAX_DURATION_S = 3600.0
#: Speech recognition input longer than this (one Whisper window, seconds) is routed segment by segment.
SEGMENTED_OVER_S = 30.0
#: The longest segment such input is cut into by default (seconds; chosen by measurement, see
#: :mod:`speech_hands.backends.windows`).
SEGMENT_S = 20.0
#: Peak amplitude (full scale = 1.0) under which a file counts as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4


#: Silero VAD's speech threshold. Its default (0.5) finds no speech in 3 % of the spoken digits of
#: FSDD; at 0.25 it finds speech in all 300 test digits and every LibriSpeech dev utterance, and
#: still none in 62 % of the ESC-10 environmental sounds.
VAD_THRESHOLD = 0.25
#: Less detected speech than this (seconds) holds no word: the shortest spoken digits have ~0.15 s.
MIN_SPEECH_S = 0.1


def speech_seconds(samples: np.ndarray) -> float:
    """Seconds of speech that voice-activity detection finds in 16 kHz ``samples``: the Silero VAD
    model that ships inside faster-whisper (ONNX; about 4 ms per second of audio on 2 cores)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    spans = get_speech_timestamps(samples, VadOptions(threshold=VAD_THRESHOLD), sampling_rate=SAMPLE_RATE)
    return sum(span["end"] - span["start"] for span in spans) / SAMPLE_RATE


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_array(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()


def is_silent(samples: np.ndarray, peak: float = SILENCE_PEAK) -> bool:
    # max and -min rather than max(abs): no temporary copy of an hour of samples
    return samples.size == 0 or max(float(samples.max()), -float(samples.min())) < peak


def _all_finite(samples: np.ndarray) -> bool:
    """No NaN or infinite sample; one float64 sum (NaN / Inf propagate) instead of a mask of every sample."""
    return bool(np.isfinite(samples.sum(dtype=np.float64))) or bool(np.all(np.isfinite(samples)))


def _open(source: Path | bytes):
    """A PyAV container over a file, or over bytes held in memory (nothing is written to disk)."""
    import io

    import av

    return av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r", metadata_errors="ignore")


def _probe(source: Path | bytes, path: str | Path | None = None) -> tuple[int | None, int | None, float | None]:
    """Sample rate, channel count and duration from the container, without decoding the audio
    (``path``: what messages call the input, default the file's path)."""
    path = path or source
    try:
        with _open(source) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: the file has no audio stream (is it an audio file?)")
            stream = container.streams.audio[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            channels = getattr(stream, "channels", None) or getattr(stream.layout, "nb_channels", None)
            return stream.rate or stream.sample_rate, channels, duration
    except AudioError:
        raise
    except Exception as exc:  # av.error.InvalidDataError and friends
        raise AudioError(
            f"{path}: cannot read audio ({type(exc).__name__}: {exc}). The file is corrupt or not an "
            "audio format FFmpeg knows; convert it to WAV/FLAC and retry."
        ) from exc


def _decode(source: Path | bytes, path: str | Path | None = None) -> np.ndarray:
    """Decode a whole file (or its bytes) to mono float32 at 16 kHz with libswresample."""
    import av

    path = path or source
    # Resample with the channel layout kept (planar float), then average the channels ourselves:
    # FFmpeg's own downmix scales by 1/sqrt(2), an average keeps levels predictable.
    resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    try:
        with _open(source) as container:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
    except Exception as exc:
        raise AudioError(
            f"{path}: decoding failed ({type(exc).__name__}: {exc}); the file is corrupt or truncated."
        ) from exc
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def resample_array(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Downmix (``(n, channels)`` arrays) and resample an in-memory array to mono 16 kHz."""
    import av

    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] <= data.shape[0] else data.mean(axis=0)
    if data.ndim != 1:
        raise AudioError(f"audio array must be 1-D or (samples, channels); got shape {samples.shape}")
    if sample_rate == SAMPLE_RATE or data.size == 0:
        return np.ascontiguousarray(data)
    frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = sample_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)


def check_audio_file(source: str | Path) -> Path:
    """The checks that need no decoding (the file exists, is a file, is not empty): ``AudioError``
    naming the path, so a command can refuse bad inputs before it loads any model."""
    path = Path(source).expanduser()
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"{path} is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path} is empty (0 bytes)")
    return path


def load_audio(
    source: str | Path,
    *,
    utterance_id: str | None = None,
    max_duration_s: float = MAX_DURATION_S,
) -> AudioInput:
    """Load a file as mono 16 kHz float32 with its :class:`AudioRef`; raise ``AudioError`` on bad input."""
    path = check_audio_file(source)
    sample_rate, channels, duration = _probe(path)
    if duration is not None and duration > max_duration_s:
        raise AudioTooLong(
            f"{path} lasts {duration:.0f} s, over the limit of {max_duration_s:.0f} s; split it, or raise "
            "max_audio_s if you have the memory and time (long audio is routed in segments of at most 20 s; its "
            "samples take 0.23 GB per hour)."
        )
    samples = _decode(path)
    if samples.size == 0:
        raise AudioError(f"{path} decodes to no audio samples (empty recording)")
    if not _all_finite(samples):  # float WAVs can hold NaN / Inf; models turn them into garbage text
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError(
            f"{path} holds {bad} NaN or infinite sample(s) (a broken float recording); fix or re-export the file"
        )
    true_duration = samples.size / SAMPLE_RATE
    if true_duration > max_duration_s:
        raise AudioTooLong(f"{path} lasts {true_duration:.0f} s, over the limit of {max_duration_s:.0f} s")
    ref = AudioRef(
        id=utterance_id or path.stem,
        path=str(path.resolve()),
        sha256=sha256_file(path),
        duration_s=round(true_duration, 4),
        sample_rate=sample_rate,
        channels=channels,
        silent=is_silent(samples),
    )
    return AudioInput(ref=ref, samples=samples)


def load_audio_bytes(
    data: bytes, *, utterance_id: str, name: str = "the upload", max_duration_s: float = MAX_DURATION_S
) -> AudioInput:
    """Decode an audio file's bytes in memory (an HTTP upload: nothing is written to disk) as mono 16 kHz
    float32; the same checks and ``AudioError`` messages as :func:`load_audio`, naming ``name``. The
    reference has no path, so the :class:`AudioStore` cannot reload it: it lives as long as the store keeps it."""
    if not data:
        raise AudioError(f"{name} is empty (0 bytes)")
    _, _, duration = _probe(data, name)
    if duration is not None and duration > max_duration_s:
        raise AudioTooLong(f"{name} lasts {duration:.0f} s, over the limit of {max_duration_s:.0f} s")
    samples = _decode(data, name)
    if samples.size == 0:
        raise AudioError(f"{name} decodes to no audio samples (empty recording)")
    return audio_from_array(samples, SAMPLE_RATE, utterance_id=utterance_id, max_duration_s=max_duration_s)


def audio_from_array(
    samples: np.ndarray, sample_rate: int, *, utterance_id: str = "array", max_duration_s: float = MAX_DURATION_S
) -> AudioInput:
    """Wrap an in-memory array (any rate, mono or ``(samples, channels)``) as an input."""
    data = resample_array(samples, sample_rate)
    if data.size == 0:
        raise AudioError("the audio array is empty")
    if not _all_finite(data):
        raise AudioError("the audio array holds NaN or infinite values")
    duration = data.size / SAMPLE_RATE
    if duration > max_duration_s:
        raise AudioTooLong(f"the audio lasts {duration:.0f} s, over the limit of {max_duration_s:.0f} s")
    ref = AudioRef(
        id=utterance_id,
        path=None,
        sha256=sha256_array(data),
        duration_s=round(duration, 4),
        sample_rate=sample_rate,
        channels=1 if np.asarray(samples).ndim == 1 else int(np.asarray(samples).shape[-1]),
        silent=is_silent(data),
    )
    return AudioInput(ref=ref, samples=data)


def audio_segment(audio: AudioInput, start: int, end: int, index: int) -> AudioInput:
    """Samples ``[start, end)`` of ``audio`` as an input of their own: a view (no copy), with a reference
    that says where it lies in the whole input (``AudioRef.start_s`` / ``end_s`` / ``source_sha256``)
    and the segment's own sha256 (caches keyed by it tell segments apart)."""
    samples = audio.require_samples()[start:end]
    whole = audio.ref
    ref = AudioRef(
        id=f"{whole.id}#{index}",
        path=whole.path,
        sha256=sha256_array(samples),
        duration_s=round(samples.size / SAMPLE_RATE, 4),
        sample_rate=whole.sample_rate,
        channels=whole.channels,
        silent=is_silent(samples),
        start_s=start / SAMPLE_RATE,
        end_s=end / SAMPLE_RATE,
        source_sha256=whole.sha256 or sha256_array(audio.require_samples()),
    )
    return AudioInput(ref=ref, samples=samples)


def virtual_audio(utterance_id: str) -> AudioInput:
    """A reference with no audio, for routing over recorded tool outputs (replay)."""
    return AudioInput(ref=AudioRef(id=utterance_id), samples=None)


#: Decoded audio the store keeps at most (bytes; 512 MiB is about 2.3 hours at 16 kHz), besides the
#: latest input, so a batch of long files does not pile up in memory.
STORE_MAX_BYTES = 512 * 1024 * 1024


class AudioStore:
    """Thread-safe LRU cache of decoded audio keyed by sha256 (the only place raw samples live).

    It keeps at most ``max_items`` inputs and ``max_bytes`` of samples (the latest input always
    stays). Segments of a long input are never stored: :meth:`get` slices them from the whole input."""

    def __init__(
        self, max_items: int = 64, max_duration_s: float = MAX_DURATION_S, max_bytes: int = STORE_MAX_BYTES
    ) -> None:
        self._items: OrderedDict[str, AudioInput] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items
        self.max_duration_s = max_duration_s
        self.max_bytes = max_bytes

    def _bytes(self) -> int:
        return sum(a.samples.nbytes for a in self._items.values() if a.samples is not None)

    def put(self, audio: AudioInput) -> AudioRef:
        if audio.ref.sha256 is not None and not audio.ref.is_segment:
            with self._lock:
                self._items[audio.ref.sha256] = audio
                self._items.move_to_end(audio.ref.sha256)
                while len(self._items) > self.max_items or (len(self._items) > 1 and self._bytes() > self.max_bytes):
                    self._items.popitem(last=False)
        return audio.ref

    def get(self, ref: AudioRef) -> AudioInput:
        """The decoded audio for ``ref``; reloads from ``ref.path`` when not cached. A segment is cut from
        the whole input (itself cached or reloaded)."""
        if ref.sha256 is None:
            return AudioInput(ref=ref, samples=None)
        if ref.is_segment:
            whole = self.get(AudioRef(id=ref.id, path=ref.path, sha256=ref.source_sha256))
            start = round((ref.start_s or 0.0) * SAMPLE_RATE)
            end = round(ref.end_s * SAMPLE_RATE) if ref.end_s is not None else None
            samples = whole.samples[start:end] if whole.samples is not None else None
            return AudioInput(ref=ref, samples=samples)
        with self._lock:
            hit = self._items.get(ref.sha256)
            if hit is not None:
                self._items.move_to_end(ref.sha256)
                return AudioInput(ref=ref, samples=hit.samples)
        if ref.path is None:
            raise AudioError(
                f"audio {ref.id!r} was given as an array and is no longer cached in this process; "
                "pass a file path to make traces resumable elsewhere"
            )
        loaded = load_audio(ref.path, utterance_id=ref.id, max_duration_s=self.max_duration_s)
        if loaded.ref.sha256 != ref.sha256:
            raise AudioError(f"{ref.path} changed since it was first loaded (sha256 differs)")
        self.put(loaded)
        return AudioInput(ref=ref, samples=loaded.samples)
