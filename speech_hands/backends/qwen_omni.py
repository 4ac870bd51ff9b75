"""Qwen2.5-Omni (the paper's omni model) as the OmniBackend, through transformers.

Loads the *thinker* (the text-generating half; the talker that speaks is never needed here) with
``Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path_or_hub_id)``. Both checkpoint layouts
load: a full Qwen2.5-Omni directory (``model_type = "qwen2_5_omni"``, thinker weights under
``thinker.``; transformers extracts them) and a thinker-only directory (``qwen2_5_omni_thinker``, what
fine-tuning frameworks save when they train the thinker alone).

The processor is Qwen2.5-Omni's own (:class:`AudioOnlyQwenOmniProcessor` subclasses it): same chat
template, same audio feature extraction and ``<|AUDIO|>`` expansion, but it does not load the image and
video processors, which need torchvision and are never used for audio. Inputs longer than one 30 s
feature window are cut at quiet frames (as the Whisper backends do) and sent as consecutive audio items
of the same user turn, because the feature extractor would otherwise keep only the first 30 s.

- ``predict`` is the model's own first pass (transcript, or answer to the question) with the prompts
  in ``speech_hands/prompts/`` (``asr_transcription``, ``audioqa_answer``); ``predict_batch`` decodes
  several inputs in one padded batch.
- ``reflect`` / ``rewrite`` / majority sampling: see :mod:`speech_hands.backends.action_lm`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from speech_hands.audio import AudioInput
from speech_hands.backends.action_lm import ActionTokenLM
from speech_hands.backends.loading import TRANSFORMERS, Loaded
from speech_hands.errors import ConfigurationError
from speech_hands.prompts import asr_transcription_prompt, audioqa_answer_prompt
from speech_hands.types import Hypothesis

OMNI_MODEL_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")
WINDOW_S = 30.0


@lru_cache(maxsize=1)
def audio_only_processor_class() -> type:
    """``Qwen2_5OmniProcessor`` without its image / video processors (built lazily: needs transformers)."""
    transformers = TRANSFORMERS.import_module()
    from transformers.processing_utils import OmniModalProcessorMixin

    base = transformers.Qwen2_5OmniProcessor

    class AudioOnlyQwenOmniProcessor(base):  # type: ignore[misc, valid-type]
        """Qwen2.5-Omni's processor for text + audio only: the sub-processors are the feature extractor
        and the tokenizer, so loading never touches the image / video processors (torchvision)."""

        def __init__(self, feature_extractor: Any = None, tokenizer: Any = None, chat_template: Any = None) -> None:
            OmniModalProcessorMixin.__init__(self, feature_extractor, tokenizer, chat_template=chat_template)
            for attr in (
                "image_token",
                "audio_token",
                "video_token",
                "image_token_id",
                "audio_token_id",
                "video_token_id",
                "vision_bos_token",
                "vision_eos_token",
                "audio_bos_token",
                "audio_eos_token",
            ):
                setattr(self, attr, getattr(self.tokenizer, attr))

        @property
        def model_input_names(self) -> list[str]:
            names = self.tokenizer.model_input_names + self.feature_extractor.model_input_names
            return list(dict.fromkeys([*names, "feature_attention_mask"]))

    return AudioOnlyQwenOmniProcessor


def _model_type(spec: str, local_files_only: bool) -> str | None:
    """The checkpoint's model_type, read from a local config.json or through AutoConfig."""
    path = Path(spec).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.exists():
            raise ConfigurationError(f"{path} has no config.json; is it a model directory saved with save_pretrained?")
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    transformers = TRANSFORMERS.import_module()
    try:
        return transformers.AutoConfig.from_pretrained(spec, local_files_only=local_files_only).model_type
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read the config of {spec!r} ({type(exc).__name__}: {exc}). Give a local Qwen2.5-Omni "
            "directory, or a hub id (e.g. Qwen/Qwen2.5-Omni-7B) on a machine that reaches the hub."
        ) from exc


def audio_windows(samples: np.ndarray, window_s: float = WINDOW_S) -> list[np.ndarray]:
    """The audio as windows of at most 30 s, cut at quiet frames."""
    from speech_hands.backends.windows import split_windows

    if samples.size == 0:
        return [samples]
    return [samples[s:e] for s, e in split_windows(samples, window_s)]


class QwenOmni(ActionTokenLM):
    """The omni backend: own prediction, first-token reflection and rewrite, all from one Qwen2.5-Omni.

    >>> omni = QwenOmni("/models/speech-hands-qwen2.5-omni-7b", device="cuda", dtype="bfloat16")  # doctest: +SKIP
    >>> agent = SpeechHands(omni, [NemoASR("nvidia/parakeet-tdt-0.6b-v3")])                      # doctest: +SKIP
    """

    hears_audio = True

    def _load(self, device: str, dtype: Any) -> Loaded:
        transformers = TRANSFORMERS.import_module()
        model_type = _model_type(self.model_spec, self.local_files_only)
        if model_type not in OMNI_MODEL_TYPES:
            raise ConfigurationError(
                f"{self.model_spec!r} is a {model_type!r} checkpoint, not Qwen2.5-Omni ({' / '.join(OMNI_MODEL_TYPES)}). "
                "For a text-only chat model use kind 'chat-llm' (ChatLLMReflector)."
            )
        try:
            model = transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
                self.model_spec, **self._from_pretrained_kwargs(dtype)
            )
            processor = audio_only_processor_class().from_pretrained(
                self.model_spec, local_files_only=self.local_files_only
            )
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot load Qwen2.5-Omni from {self.model_spec!r} ({type(exc).__name__}: {exc}). The directory "
                "needs the model weights, config.json, the tokenizer files and preprocessor_config.json."
            ) from exc
        if processor.chat_template is None and processor.tokenizer.chat_template is None:
            raise ConfigurationError(
                f"{self.model_spec!r} has no chat template (chat_template.jinja); copy it from the base model"
            )
        return self._finish_load(model, processor.tokenizer, device, processor=processor)

    # ------------------------------------------------------------------ encoding with audio

    def _messages(self, prompt: str, audio: AudioInput | None) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if audio is not None:
            # the arrays go to the processor separately; the template only needs one item per window
            for _ in audio_windows(audio.require_samples()):
                content.append({"type": "audio", "audio": "in-memory"})
        content.append({"type": "text", "text": prompt})
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        messages.append({"role": "user", "content": content})
        return messages

    def _encode(
        self, loaded: Loaded, prompts: Sequence[str], audios: Sequence[AudioInput | None], prefix: Sequence[str]
    ) -> Any:
        processor = loaded.extras["processor"]
        texts, arrays = [], []
        for prompt, audio, pre in zip(prompts, audios, prefix):
            texts.append(
                processor.apply_chat_template(self._messages(prompt, audio), add_generation_prompt=True, tokenize=False)
                + pre
            )
            if audio is not None:
                arrays += audio_windows(audio.require_samples())
        return processor(text=texts, audio=arrays or None, return_tensors="pt", padding=True)

    # ------------------------------------------------------------------ own prediction

    def _predict_prompt(self, question: str | None) -> str:
        if self.task == "asr":
            return asr_transcription_prompt()
        if not question:
            raise ConfigurationError(f"{self.name} answers questions about audio (task='audioqa'); pass question=...")
        return audioqa_answer_prompt(question)

    def predict(self, audio: AudioInput, question: str | None = None) -> list[Hypothesis]:
        """The model's own first pass (greedy): transcript, or answer to the question."""
        return self.predict_batch([audio], question)[0]

    def predict_batch(self, audios: Sequence[AudioInput], question: str | None = None) -> list[list[Hypothesis]]:
        """First passes for several inputs in one padded batch (same question for all)."""
        prompt = self._predict_prompt(question)
        out = self._generate([prompt] * len(audios), list(audios), [""] * len(audios), sample=False)
        return [[Hypothesis(text=g.text, score=g.score, source=self.name)] if g.text else [] for g in out]
