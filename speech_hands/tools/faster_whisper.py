"""Whisper through faster-whisper / CTranslate2, returning a real N-best list.

``WhisperModel.transcribe`` only returns the best path. The N-best comes from CTranslate2's beam
search directly: encode the log-mel features once, then ``generate(num_hypotheses=n,
return_scores=True, length_penalty=1)``, which returns the n best beams with their **mean
log-probability per token** as score (so ``exp(score)`` is a per-token probability).

One ``generate`` call covers one 30 s window. Longer audio is cut into windows of at most 30 s, each
cut placed at the quietest 100 ms frame of the window's last 5 s (so words are rarely split); the
windows are decoded in one batched call and their N-best lists are combined rank-wise: hypothesis r
is the concatenation of every window's hypothesis min(r, len-1), scored by the duration-weighted mean
of the window scores. That is an approximation of a true N-best over the whole input (the
combinations are not re-ranked), documented as such.

Models load lazily, once per process: backends on the same weights and settings share one
``WhisperModel``. CTranslate2 models are safe to call from several threads (calls to one model queue
inside it; different models run at the same time), which the parallel perception fan-out relies on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from speech_hands.errors import ConfigurationError
from speech_hands.tools.base import SAMPLE_RATE, AudioInput
from speech_hands.tools.weights import BUNDLED_PREFIX, resolve_model
from speech_hands.types import Hypothesis

log = logging.getLogger(__name__)

WINDOW_S = 30.0
CUT_SEARCH_S = 5.0
FRAME_S = 0.1

_models: dict[tuple[str, str, str, int], Any] = {}
_models_lock = threading.Lock()


def load_whisper(path: str, device: str, compute_type: str, cpu_threads: int) -> Any:
    """A process-wide shared ``faster_whisper.WhisperModel`` for these settings."""
    key = (path, device, compute_type, cpu_threads)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            from faster_whisper import WhisperModel

            try:
                model = WhisperModel(
                    path, device=device, compute_type=compute_type, cpu_threads=cpu_threads, local_files_only=False
                )
            except Exception as exc:
                raise ConfigurationError(
                    f"cannot load Whisper model {path!r} ({type(exc).__name__}: {exc}). Offline, use "
                    "bundled:base / bundled:tiny.en or a local CTranslate2 directory "
                    "(ct2-transformers-converter converts a Hugging Face Whisper checkpoint)."
                ) from exc
            _models[key] = model
        return model


def split_windows(samples: np.ndarray, window_s: float = WINDOW_S) -> list[tuple[int, int]]:
    """Cut points (start, end) in samples: windows of at most ``window_s``, cut at quiet frames."""
    window = int(window_s * SAMPLE_RATE)
    search = int(CUT_SEARCH_S * SAMPLE_RATE)
    frame = int(FRAME_S * SAMPLE_RATE)
    spans, start = [], 0
    while samples.size - start > window:
        lo, hi = start + window - search, start + window
        region = samples[lo:hi]
        n_frames = region.size // frame
        energy = (region[: n_frames * frame].reshape(n_frames, frame) ** 2).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        spans.append((start, cut))
        start = cut
    spans.append((start, samples.size))
    return spans


@dataclass(frozen=True)
class _Beam:
    text: str
    score: float


class FasterWhisperASR:
    """An ASR backend (``transcribe(audio, n_best)``) over a CTranslate2 Whisper model."""

    def __init__(
        self,
        *,
        model: str = "bundled:base",
        name: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 5,
        language: str | None = "en",
        max_length: int = 448,
    ) -> None:
        self.model_spec = model
        self.name = name or ("whisper-" + model.removeprefix(BUNDLED_PREFIX).rstrip("/").split("/")[-1])
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.language = language
        self.max_length = max_length
        self._model: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    def load(self) -> Any:
        """Load (or fetch the shared) model now; later calls are free."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    path = resolve_model(self.model_spec)
                    self._model = load_whisper(path, self.device, self.compute_type, self.cpu_threads)
        return self._model

    @property
    def is_multilingual(self) -> bool:
        return bool(self.load().model.is_multilingual)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model_spec,
            "path": resolve_model(self.model_spec),
            "device": self.device,
            "compute_type": self.compute_type,
            "multilingual": self.is_multilingual,
        }

    # ------------------------------------------------------------------ decoding

    def _prompt(self, model: Any, encoded: Any) -> list[int]:
        from faster_whisper.tokenizer import Tokenizer

        language = self.language
        if model.model.is_multilingual and language is None:
            detected = model.model.detect_language(encoded)[0][0][0]  # e.g. "<|en|>"
            language = detected.strip("<|>")
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language or "en")
        return [*tokenizer.sot_sequence, tokenizer.no_timestamps]

    def _decode_windows(self, windows: list[np.ndarray], n_best: int) -> list[list[_Beam]]:
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        model = self.load()
        features = np.stack([pad_or_trim(model.feature_extractor(w)) for w in windows])
        encoded = model.encode(features)
        prompt = self._prompt(model, encoded)
        results = model.model.generate(
            encoded,
            [prompt] * len(windows),
            beam_size=max(self.beam_size, n_best),
            num_hypotheses=n_best,
            return_scores=True,
            length_penalty=1,
            max_length=self.max_length,
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        beams: list[list[_Beam]] = []
        for result in results:
            seen: dict[str, _Beam] = {}
            for ids, score in zip(result.sequences_ids, result.scores):
                text = tokenizer.decode(ids).strip()
                if text and text not in seen:  # keep the best-scored copy of duplicate texts
                    seen[text] = _Beam(text=text, score=float(score))
            beams.append(list(seen.values()))
        return beams

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        """The N-best list for the whole input, best first (see module docstring for long audio)."""
        samples = audio.require_samples()
        if samples.size == 0:
            return []
        spans = split_windows(samples)
        per_window = self._decode_windows([samples[s:e] for s, e in spans], n_best)
        kept = [(beams, e - s) for beams, (s, e) in zip(per_window, spans) if beams]
        if not kept:
            return []
        total = sum(d for _, d in kept)
        depth = max(len(beams) for beams, _ in kept)
        hypotheses: list[Hypothesis] = []
        seen: set[str] = set()
        for rank in range(depth):
            parts = [beams[min(rank, len(beams) - 1)] for beams, _ in kept]
            text = " ".join(p.text for p in parts)
            if text in seen:
                continue
            seen.add(text)
            score = sum(p.score * d for p, (_, d) in zip(parts, kept)) / total
            hypotheses.append(Hypothesis(text=text, score=score, source=self.name, rank=len(hypotheses)))
        return hypotheses
