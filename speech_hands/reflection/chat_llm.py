"""A text chat LLM fine-tuned with the action tokens as the reflection policy and rewrite strategy.

The paper's no-audio variant: the model reads the candidates (and the tools' confidences) as text,
emits the first-token action and, after ``<rewrite>``, writes the corrected transcript (generative
error correction). It runs on the same engine as the omni backend
(:class:`~speech_hands.backends.action_lm.ActionTokenLM`); composed with a predictor it takes the
omni role (``kind = "chat-llm"`` in a configuration).
"""

from __future__ import annotations

from typing import Any

from speech_hands.backends.action_lm import ActionTokenLM
from speech_hands.backends.loading import TRANSFORMERS, Loaded
from speech_hands.errors import ConfigurationError


class ChatLLMReflector(ActionTokenLM):
    """Any transformers chat LLM fine-tuned with the action tokens, reading the candidates as text.

    It cannot hear, so it is a reflection policy and rewrite strategy, not an omni model: compose it
    with a predictor, ``ComposedOmni(predictor, llm, llm)`` (``SpeechHands.from_config`` does this for
    ``kind = "chat-llm"``)."""

    hears_audio = False

    def _load(self, device: str, dtype: Any) -> Loaded:
        transformers = TRANSFORMERS.import_module()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                self.model_spec, local_files_only=self.local_files_only
            )
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.model_spec, **self._from_pretrained_kwargs(dtype)
            )
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot load the chat model {self.model_spec!r} ({type(exc).__name__}: {exc}). Give a local "
                "directory saved with save_pretrained, or a hub id on a machine that reaches the hub."
            ) from exc
        return self._finish_load(model, tokenizer, device)
