"""A text chat LLM fine-tuned with the action tokens as the reflection policy and rewrite strategy.

The paper's no-audio variant: the model reads the candidates (and the tools' confidences) as text,
emits the first-token action and, after ``<rewrite>``, writes the corrected transcript (generative
error correction). It runs on the same engine as the omni backend
(:class:`~speech_hands.backends.action_lm.ActionTokenLM`); composed with a predictor it takes the
omni role (``kind = "chat-llm"`` in a configuration).

The model is anything :func:`speech_hands.backends.llm_weights.resolve_llm` takes: ``bundled:qwen2.5-0.5b``
(the bundled Qwen2.5-Coder-0.5B-Instruct, converted once into the cache; it has no action tokens, so
``add_action_tokens=True`` for a baseline, or a checkpoint of ``speech-hands finetune --model
bundled:qwen2.5-0.5b --lora``), a ``.gguf`` file, a local transformers directory or a hub id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speech_hands.backends.action_lm import ActionTokenLM
from speech_hands.backends.loading import TRANSFORMERS, Loaded
from speech_hands.errors import ConfigurationError

#: ``reflector.json`` of a text reflector fine-tuned by ``speech-hands finetune --model bundled:qwen2.5-0.5b --lora``
#: (:mod:`speech_hands.training.finetune_llm`); its folder is a transformers directory
TEXT_FORMAT = "speech-hands-text-reflector"
TEXT_FORMAT_VERSION = 1
CHECKPOINT_FILE = "reflector.json"


def is_text_reflector(path: str | Path) -> bool:
    """Whether ``path`` is a text-reflector checkpoint folder (``reflector.json`` of format ``TEXT_FORMAT``)."""
    info = Path(path).expanduser() / CHECKPOINT_FILE
    if not info.is_file():
        return False
    try:
        return json.loads(info.read_text(encoding="utf-8")).get("format") == TEXT_FORMAT
    except ValueError:
        return False


class ChatLLMReflector(ActionTokenLM):
    """Any transformers chat LLM fine-tuned with the action tokens, reading the candidates as text.

    It cannot hear, so it is a reflection policy and rewrite strategy, not an omni model: compose it
    with a predictor, ``ComposedOmni(predictor, llm, llm)`` (``SpeechHands.from_config`` does this for
    ``kind = "chat-llm"``)."""

    hears_audio = False

    def _load(self, device: str, dtype: Any) -> Loaded:
        from speech_hands.backends.llm_weights import resolve_llm

        transformers = TRANSFORMERS.import_module()
        where = resolve_llm(self.model_spec)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(where, local_files_only=self.local_files_only)
            model = transformers.AutoModelForCausalLM.from_pretrained(where, **self._from_pretrained_kwargs(dtype))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot load the chat model {self.model_spec!r} ({type(exc).__name__}: {exc}). Give "
                "bundled:qwen2.5-0.5b, a .gguf file, a local directory saved with save_pretrained, or a hub id on a "
                "machine that reaches the hub."
            ) from exc
        return self._finish_load(model, tokenizer, device)
