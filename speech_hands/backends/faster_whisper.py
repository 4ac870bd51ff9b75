"""Whisper through faster-whisper / CTranslate2, returning a real N-best list.

``WhisperModel.transcribe`` only returns the best path. The N-best comes from CTranslate2's beam
search directly: encode the log-mel features once, then ``generate(num_hypotheses=n,
return_scores=True, length_penalty=1)``, which returns the n best beams with their **mean
log-probability per token** as score (so ``exp(score)`` is a per-token probability).

The encoder states of each window are cached per loaded model (keyed by the window's samples), so the
learned reflector's re-decode and scoring passes reuse what perception already encoded instead of
running the encoder again (about a third of a second per window for base on 2 CPU cores).

An optional text ``prompt`` (earlier turns of a conversation, names, spelling) is faster-whisper's
``initial_prompt``: its tokens go after ``<|startofprev|>`` before the start-of-transcript sequence,
keeping the most recent :data:`PROMPT_TOKENS` tokens (half the decoder context, as faster-whisper
does). Every window of a long input gets the same prompt.

One ``generate`` call covers one 30 s window. Longer audio is cut into windows at quiet frames and
the windows are decoded in one batched call; their N-best lists are joined rank-wise
(:mod:`speech_hands.backends.windows` documents both steps, shared by every windowed backend).

Models load lazily, once per process (:class:`~speech_hands.backends.loading.LazyModel`): backends on
the same weights and settings share one ``WhisperModel`` and its encoder-state cache. CTranslate2
models are safe to call from several threads (calls to one model queue inside it; different models
run at the same time), which the parallel perception fan-out relies on.

Threads: ``cpu_threads="auto"`` is every core this process may use; an agent gives each of its
CTranslate2 models an even share instead (:func:`threads_per_model`, applied by
:mod:`speech_hands.assembly`): two OpenMP teams of CTranslate2's default size contend for the same
cores, and one model on 2 cores is barely faster than on one (benchmarks/RESULTS.md, ``cost``, has
both settings).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from speech_hands.audio import AudioInput
from speech_hands.backends.loading import LazyModel, Loaded, ModelRequest, model_name
from speech_hands.backends.weights import BUNDLED_PREFIX, resolve_model
from speech_hands.backends.windows import nbest_over_windows, split_windows
from speech_hands.errors import ConfigurationError
from speech_hands.types import Hypothesis

__all__ = ["PROMPT_TOKENS", "EncoderCache", "FasterWhisperASR", "split_windows"]

log = logging.getLogger(__name__)

#: The most prompt tokens one decode takes (faster-whisper's ``max_length // 2 - 1`` for 448): older text is dropped.
PROMPT_TOKENS = 223


class EncoderCache:
    """The last few windows' encoder states of one loaded model, keyed by the window's samples.

    Host-side arrays (``(frames, d_model)`` per window): CTranslate2 copies them to the
    device when a ``generate`` call needs them, and NumPy can repeat them along the batch axis for
    the scoring pass. Keys are a digest of the raw samples, so two callers that cut the same window
    share an entry whatever object or path the audio came from.
    """

    def __init__(self, max_windows: int = 8) -> None:
        self.max_windows = max_windows
        self._states: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(window: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(window, dtype=np.float32).tobytes(), digest_size=16).digest()

    def get(self, key: bytes) -> np.ndarray | None:
        with self._lock:
            hit = self._states.get(key)
            if hit is not None:
                self._states.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return hit

    def put(self, key: bytes, states: np.ndarray) -> None:
        with self._lock:
            self._states[key] = states
            while len(self._states) > self.max_windows:
                self._states.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._states.clear()


#: ``cpu_threads`` value meaning "work it out from the machine" (:func:`threads_per_model`)
AUTO_THREADS = "auto"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_model(sharing: int, cores: int | None = None) -> int:
    """CTranslate2 threads for each of ``sharing`` models that run at the same time: an even share
    of the cores, at least one."""
    return max(1, (available_cores() if cores is None else cores) // max(1, sharing))


def check_cpu_threads(value: Any) -> int | Literal["auto"]:
    """``value`` if it is a valid ``cpu_threads`` (an int >= 0, 0 = CTranslate2's default; or
    ``"auto"``), else a ConfigurationError naming the choices."""
    if value == AUTO_THREADS or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ConfigurationError(
        f"cpu_threads must be 'auto' or a whole number >= 0 (0: CTranslate2's default), not {value!r}"
    )


def _load_whisper(path: str, device: str, compute_type: str, cpu_threads: int) -> Loaded:
    """A ``faster_whisper.WhisperModel`` with an empty encoder-state cache of its own."""
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
    return Loaded(model=model, extras={"encoder_cache": EncoderCache()})


def _storage(array: np.ndarray) -> Any:
    """A CTranslate2 view of a host array (the model copies it to its device when needed)."""
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))


class FasterWhisperASR:
    """An ASR backend (``transcribe(audio, n_best)``) over a CTranslate2 Whisper model."""

    def __init__(
        self,
        *,
        model: str = "bundled:base",
        name: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int | Literal["auto"] = 0,
        beam_size: int = 5,
        language: str | None = "en",
        max_length: int = 448,
    ) -> None:
        self.model_spec = model
        self.name = name or model_name(model, prepend="whisper-", drop_prefix=BUNDLED_PREFIX)
        self.device = device
        self.compute_type = compute_type
        threads = check_cpu_threads(cpu_threads)
        #: CTranslate2 intra-op threads ("auto": every available core; an agent passes its share)
        self.cpu_threads = threads_per_model(1) if threads == AUTO_THREADS else threads
        self.beam_size = beam_size
        self.language = language
        self.max_length = max_length
        self._model = LazyModel(self._model_request)

    # ------------------------------------------------------------------ loading

    def _model_request(self) -> ModelRequest:
        path = resolve_model(self.model_spec)
        key = ("faster-whisper", path, self.device, self.compute_type, self.cpu_threads)
        return ModelRequest(key, lambda: _load_whisper(path, self.device, self.compute_type, self.cpu_threads))

    def load(self) -> Any:
        """The ``WhisperModel``, loaded (or fetched from the process-wide cache) now; later calls are free."""
        return self._model.get().model

    @property
    def encoder_cache(self) -> EncoderCache:
        """The encoder-state cache of the loaded model (shared by every backend on the same model)."""
        return self._model.get().extras["encoder_cache"]

    def encode_windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Encoder states ``(len(windows), frames, d_model)`` (host memory) of 30 s windows, cached.

        Only the windows not in the cache go through the encoder, in one batch.
        """
        from faster_whisper.audio import pad_or_trim

        model = self.load()
        cache = self.encoder_cache
        keys = [EncoderCache.key(w) for w in windows]
        states: list[np.ndarray | None] = [cache.get(k) for k in keys]
        todo = [i for i, s in enumerate(states) if s is None]
        if todo:
            features = np.stack([pad_or_trim(model.feature_extractor(windows[i])) for i in todo])
            encoded = model.model.encode(_storage(features), to_cpu=True)
            fresh = np.array(encoded, copy=True)  # own the memory: the view dies with ``encoded``
            for row, i in enumerate(todo):
                states[i] = fresh[row]
                cache.put(keys[i], fresh[row])
        return np.stack(states)  # type: ignore[arg-type]

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

    def _prompt(self, model: Any, encoded: Any, text: str | None = None) -> list[int]:
        from faster_whisper.tokenizer import Tokenizer

        language = self.language
        if model.model.is_multilingual and language is None:
            detected = model.model.detect_language(encoded)[0][0][0]  # e.g. "<|en|>"
            language = detected.strip("<|>")
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language or "en"
        )
        previous: list[int] = []
        if text and text.strip():
            previous = [tokenizer.sot_prev, *tokenizer.encode(" " + text.strip())[-PROMPT_TOKENS:]]
        return [*previous, *tokenizer.sot_sequence, tokenizer.no_timestamps]

    def _decode_windows(
        self, windows: list[np.ndarray], n_best: int, prompt: str | None = None
    ) -> list[list[tuple[str, float]]]:
        from faster_whisper.tokenizer import Tokenizer

        model = self.load()
        encoded = _storage(self.encode_windows(windows))
        tokens = self._prompt(model, encoded, prompt)
        results = model.model.generate(
            encoded,
            [tokens] * len(windows),
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

    def transcribe(self, audio: AudioInput, n_best: int = 5, prompt: str | None = None) -> list[Hypothesis]:
        """The N-best list for the whole input, best first (long audio: see :mod:`~speech_hands.backends.windows`).
        ``prompt``: text said before this audio (Whisper's initial prompt; the last :data:`PROMPT_TOKENS` tokens)."""
        return nbest_over_windows(
            audio.require_samples(), lambda windows: self._decode_windows(windows, n_best, prompt), n_best, self.name
        )
