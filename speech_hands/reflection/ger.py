"""Generative error correction (GER): a chat LLM writes the transcript from every tool's N-best list.

The paper's cascaded baseline ("GER -> ASR"): no decision, the LLM always rewrites. Here it is a
rewrite strategy (``rewrite(inp) -> Hypothesis``) over any langchain-core chat model, by default the
bundled Qwen2.5-0.5B-Instruct (:func:`speech_hands.backends.local_llm.load_chat_model`, loaded on
first use). The prompt (``prompts/asr_ger.txt``) lists the candidates, the internal model's N-best
first, then each external tool's, texts equal after normalisation listed once.

The reply is cleaned of formatting only (a leading list number, quotes, a ``Transcript:`` label; the
first non-empty line); its words are never edited. An empty reply keeps the current answer, and the
hypothesis's ``source`` says so (``ger:NAME:empty-output-kept-current``), as the other rewriters do.

    from speech_hands.reflection.ger import GERRewriter
    ger = GERRewriter()                     # bundled:qwen2.5-0.5b, greedy
    ger.rewrite(reflection_input).text
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from speech_hands.prompts import asr_ger_prompt
from speech_hands.reflection.base import ReflectionInput
from speech_hands.text import normalize_english
from speech_hands.types import Hypothesis

log = logging.getLogger(__name__)

_LABEL = re.compile(r"^\s*(?:corrected\s+)?(?:transcript(?:ion)?|answer)\s*:\s*", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*(?:\d+[.)]|[-*])\s+")
_QUOTES = "\"'“”‘’`"


def ger_candidates(inp: ReflectionInput) -> list[str]:
    """Every candidate text, the internal model's N-best first, then each external tool's; texts equal
    after Whisper English normalisation (punctuation, case) are listed once, in their first spelling."""
    seen: dict[str, str] = {}
    for output in inp.all_candidates():
        for h in output.hypotheses:
            key = normalize_english(h.text)
            if key:
                seen.setdefault(key, h.text.strip())
    return list(seen.values())


def clean_reply(text: str) -> str:
    """The first non-empty line without a list number, a label or surrounding quotes."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = _NUMBER.sub("", _LABEL.sub("", line.strip()))
    return line.strip().strip(_QUOTES).strip()


class GERRewriter:
    """A chat LLM as the rewrite strategy (see module docstring)."""

    def __init__(
        self, chat_model: Any = None, *, model: str | None = None, name: str | None = None, max_new_tokens: int = 128
    ) -> None:
        from speech_hands.backends.local_llm import BUNDLED_QWEN

        self.model_spec = model or BUNDLED_QWEN
        self.name = name or (getattr(chat_model, "model", None) or self.model_spec).split("/")[-1].removeprefix(
            "bundled:"
        )
        self.max_new_tokens = max_new_tokens
        self._chat = chat_model
        self._lock = threading.Lock()

    @property
    def chat_model(self) -> Any:
        if self._chat is None:
            with self._lock:
                if self._chat is None:
                    from speech_hands.backends.local_llm import load_chat_model

                    self._chat = load_chat_model(self.model_spec, max_new_tokens=self.max_new_tokens)
        return self._chat

    def prompt(self, inp: ReflectionInput) -> str:
        return asr_ger_prompt(ger_candidates(inp))

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        reply = self.chat_model.invoke([("human", self.prompt(inp))])
        text = clean_reply(str(reply.content))
        if not text:
            current = inp.internal.top.text if inp.internal is not None and inp.internal.top is not None else ""
            log.warning("GER (%s) wrote nothing; keeping the current answer", self.name)
            return Hypothesis(text=current, score=None, source=f"ger:{self.name}:empty-output-kept-current")
        return Hypothesis(text=text, score=None, source=f"ger:{self.name}")
