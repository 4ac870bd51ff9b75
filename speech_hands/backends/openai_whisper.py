"""Whisper through the ``openai-whisper`` package (PyTorch), with a real N-best list.

``whisper.load_model(name_or_path)`` takes an official name (``large-v2``, downloaded to
``~/.cache/whisper``) or a local checkpoint file (``{"dims": ..., "model_state_dict": ...}``, what
``torch.save`` of a Whisper model's dims and state dict gives). Audio is passed as the numpy array the
agent already holds: ``whisper.load_audio`` would shell out to an ``ffmpeg`` binary.

``whisper.decode`` keeps only the best beam. The N-best comes from the same decoding task run to the
end: :class:`_NBestTask` is openai-whisper's ``DecodingTask`` whose last step returns every finished
candidate (up to ``beam_size``, or the ``best_of`` samples when ``temperature > 0``) ranked by the
same length-normalised score ``whisper.decode`` uses to pick its best; each hypothesis's ``score`` is
its **mean log-probability per token** (end token included), as in the other Whisper backend.
Audio over 30 s is cut into windows at quiet frames and the windows' N-best lists are combined rank
by rank (documented approximation, as in :mod:`speech_hands.backends.faster_whisper`).

An optional text ``prompt`` (earlier turns of a conversation) is openai-whisper's ``prompt`` decoding
option: it goes after ``<|startofprev|>``, and openai-whisper keeps its last ``n_text_ctx // 2 - 1``
tokens (223 for every released model).

``word_timestamps`` is offered separately by :meth:`OpenAIWhisperASR.words` (the 1-best with word
timings from openai-whisper's cross-attention alignment): the N-best list has no timings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from speech_hands.audio import AudioInput
from speech_hands.backends.loading import LazyModel, Loaded, ModelRequest, model_name, resolve_device
from speech_hands.backends.windows import nbest_over_windows
from speech_hands.errors import ConfigurationError
from speech_hands.types import Hypothesis


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


def _nbest_task_class() -> type:
    from whisper.decoding import DecodingTask

    class _NBestTask(DecodingTask):
        """openai-whisper's DecodingTask, returning all finished candidates instead of the best one."""

        def run_nbest(self, mel: Any) -> list[list[tuple[list[int], float]]]:
            import torch

            self.decoder.reset()
            tokenizer = self.tokenizer
            n_audio = mel.shape[0]
            audio_features = self._get_audio_features(mel)
            tokens = torch.tensor([self.initial_tokens]).repeat(n_audio, 1)
            self._detect_language(audio_features, tokens)
            tokens = tokens.repeat_interleave(self.n_group, dim=0).to(audio_features.device)
            tokens, sum_logprobs, _ = self._main_loop(audio_features, tokens)
            tokens = tokens.reshape(n_audio, self.n_group, -1)
            sum_logprobs = sum_logprobs.reshape(n_audio, self.n_group)
            tokens, sum_logprobs = self.decoder.finalize(tokens, sum_logprobs)
            results = []
            for candidates, logprobs in zip(tokens, sum_logprobs):
                cut = []
                for t in candidates:
                    end = (t == tokenizer.eot).nonzero()
                    stop = int(end[0, 0]) if len(end) else t.shape[0]
                    cut.append(t[self.sample_begin : stop].tolist())
                # rank with the same length penalty whisper.decode uses for its choice
                order = sorted(range(len(cut)), key=lambda i: -self._penalised(float(logprobs[i]), len(cut[i])))
                results.append([(cut[i], float(logprobs[i]) / (len(cut[i]) + 1)) for i in order])
            return results

        def _penalised(self, logprob: float, length: int) -> float:
            """openai-whisper's MaximumLikelihoodRanker score (the one ``decode`` picks its best by)."""
            penalty = self.options.length_penalty
            if penalty is None:
                return logprob / max(length, 1)
            return logprob / (((5 + length) / 6) ** penalty)

    return _NBestTask


class OpenAIWhisperASR:
    """An ASR backend (``transcribe(audio, n_best)``) over an openai-whisper model."""

    def __init__(
        self,
        model: str = "large-v2",
        *,
        name: str | None = None,
        device: str = "auto",
        fp16: bool | None = None,
        beam_size: int = 5,
        best_of: int = 5,
        temperature: float = 0.0,
        language: str | None = "en",
        max_tokens: int | None = None,
        download_root: str | None = None,
    ) -> None:
        self.model_spec = str(model)
        self.name = name or model_name(model, prepend="whisper-", drop_suffix=".pt")
        self.device_spec = device
        self.fp16 = fp16
        self.beam_size = beam_size
        self.best_of = best_of
        self.temperature = temperature
        self.language = language
        self.max_tokens = max_tokens
        self.download_root = download_root
        self._model = LazyModel(self._model_request)

    def load(self) -> Loaded:
        """Load (or fetch the process-wide copy of) the model now; later calls are free."""
        return self._model.get()

    def _model_request(self) -> ModelRequest:
        device = resolve_device(self.device_spec)
        key = ("openai-whisper", self.model_spec, device, self.download_root)
        return ModelRequest(key, lambda: self._load(device))

    def _load(self, device: str) -> Loaded:
        import whisper

        try:
            model = whisper.load_model(self.model_spec, device=device, download_root=self.download_root)
        except (RuntimeError, OSError) as exc:
            raise ConfigurationError(
                f"cannot load openai-whisper model {self.model_spec!r} ({exc}). Use an official name "
                f"({', '.join(whisper.available_models()[-4:])}, ...; downloads once) or a local checkpoint file."
            ) from exc
        return Loaded(model=model.eval())

    @property
    def _use_fp16(self) -> bool:
        model = self.load().model
        return self.fp16 if self.fp16 is not None else model.device.type == "cuda"

    def _options(self, n_best: int, prompt: str | None = None) -> Any:
        import whisper

        model = self.load().model
        sampling = self.temperature > 0
        return whisper.DecodingOptions(
            task="transcribe",
            language=self.language if model.is_multilingual else "en",
            temperature=self.temperature,
            beam_size=None if sampling else max(self.beam_size, n_best),
            best_of=max(self.best_of, n_best) if sampling else None,
            without_timestamps=True,
            sample_len=self.max_tokens,
            fp16=self._use_fp16,
            prompt=" " + prompt.strip() if prompt and prompt.strip() else None,
        )

    def _decode_windows(
        self, windows: list[np.ndarray], n_best: int, prompt: str | None = None
    ) -> list[list[tuple[str, float]]]:
        import torch
        import whisper

        loaded = self.load()
        model = loaded.model
        mels = torch.stack(
            [whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(w)), model.dims.n_mels) for w in windows]
        ).to(model.device)
        if self._use_fp16:
            mels = mels.half()
        options = self._options(n_best, prompt)
        ranked = []
        with loaded.lock, torch.inference_mode():
            task = _nbest_task_class()(model, options)
            # one window per call: openai-whisper's beam search does not repeat the audio features per
            # beam, so a batch of several windows with beam_size > 1 fails inside its decoder
            for mel in mels:
                ranked += task.run_nbest(mel.unsqueeze(0))
        tokenizer = task.tokenizer
        out = []
        for candidates in ranked:
            seen: dict[str, float] = {}
            for ids, score in candidates:
                text = tokenizer.decode([t for t in ids if t < tokenizer.eot]).strip()  # text tokens only
                if text and text not in seen:
                    seen[text] = score
            out.append(list(seen.items())[:n_best])
        return out

    def transcribe(self, audio: AudioInput, n_best: int = 5, prompt: str | None = None) -> list[Hypothesis]:
        """The N-best list, best first (long audio: see :mod:`~speech_hands.backends.windows`); ``prompt``:
        text said before this audio (openai-whisper's ``prompt``)."""
        return nbest_over_windows(
            audio.require_samples(), lambda windows: self._decode_windows(windows, n_best, prompt), n_best, self.name
        )

    def words(self, audio: AudioInput) -> list[Word]:
        """The 1-best transcript's words with start / end times (seconds) and probabilities."""
        import torch
        import whisper

        loaded = self.load()
        with loaded.lock, torch.inference_mode():
            result = whisper.transcribe(
                loaded.model,
                audio.require_samples(),
                language=self.language,
                word_timestamps=True,
                fp16=self._use_fp16,
                beam_size=self.beam_size,
                temperature=0.0,
                condition_on_previous_text=False,
                sample_len=self.max_tokens,
                verbose=None,
            )
        return [
            Word(
                word=w["word"].strip(),
                start=float(w["start"]),
                end=float(w["end"]),
                probability=float(w["probability"]),
            )
            for segment in result["segments"]
            for w in segment.get("words", [])
        ]
