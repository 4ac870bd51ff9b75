"""Whisper through faster-whisper / CTranslate2, returning a real N-best list.

``WhisperModel.transcribe`` only returns the best path. The N-best comes from CTranslate2's beam
search directly: encode the log-mel features once, then ``generate(num_hypotheses=n,
return_scores=True, length_penalty=1)``, which returns the n best beams with their **mean
log-probability per token** as score (so ``exp(score)`` is a per-token probability).

One ``generate`` call covers one 30 s window. Longer audio is cut into windows at quiet frames and
the windows are decoded in one batched call; their N-best lists are joined rank-wise
(:mod:`speech_hands.tools.windows` documents both steps, shared by every windowed backend).

Models load lazily, once per process: backends on the same weights and settings share one
``WhisperModel``. CTranslate2 models are safe to call from several threads (calls to one model queue
inside it; different models run at the same time), which the parallel perception fan-out relies on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from speech_hands.errors import ConfigurationError
from speech_hands.tools.base import AudioInput
from speech_hands.tools.weights import BUNDLED_PREFIX, resolve_model
from speech_hands.tools.windows import nbest_over_windows, split_windows
from speech_hands.types import Hypothesis

__all__ = ["FasterWhisperASR", "load_whisper", "split_windows"]

log = logging.getLogger(__name__)


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

    def _decode_windows(self, windows: list[np.ndarray], n_best: int) -> list[list[tuple[str, float]]]:
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
        beams: list[list[tuple[str, float]]] = []
        for result in results:
            seen: dict[str, float] = {}
            for ids, score in zip(result.sequences_ids, result.scores):
                text = tokenizer.decode(ids).strip()
                if text and text not in seen:  # keep the best-scored copy of duplicate texts
                    seen[text] = float(score)
            beams.append(list(seen.items()))
        return beams

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        """The N-best list for the whole input, best first (long audio: see :mod:`~speech_hands.tools.windows`)."""
        return nbest_over_windows(
            audio.require_samples(), lambda windows: self._decode_windows(windows, n_best), n_best, self.name
        )
