"""Prompt templates: the only place prompt text lives.

The structure follows the Speech-Hands paper (METHOD.md section 2): a role line, the numbered inputs,
one bullet per action token saying when to emit it and that the answer follows it, then the candidate
list and the model's own first pass. The wording is ours. Templates are plain text files beside this
module so they can be read, diffed and overridden without touching code.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Sequence

from speech_hands.types import Action

TEMPLATES = ("asr_reflection", "audioqa_reflection")


@lru_cache(maxsize=None)
def load_template(name: str) -> str:
    """The raw text of a template by name (``asr_reflection``, ``audioqa_reflection``)."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; available: {', '.join(TEMPLATES)}")
    return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


def _tokens() -> dict[str, str]:
    return {f"{a.value}_token": a.token for a in Action}


def asr_reflection_prompt(internal: str, hypotheses: Sequence[str]) -> str:
    """The ASR reflection prompt: numbered external N-best, then the model's own transcript."""
    listing = "\n".join(f"{i}. {h}" for i, h in enumerate(hypotheses, 1)) or "(none)"
    return load_template("asr_reflection").format(hypotheses=listing, internal=internal, **_tokens()).strip()


def audioqa_reflection_prompt(question: str, options: Sequence[str], external: str, internal: str) -> str:
    """The AudioQA reflection prompt: question, one option per line ("- A. ..."), both predictions."""
    listing = "\n".join(f"- {o}" for o in options)
    return load_template("audioqa_reflection").format(
        question=question, options=listing, external=external, internal=internal, **_tokens()
    ).strip()


def sft_target(action: Action, answer: str, *, task: str = "asr") -> str:
    """The fine-tuning target: action token then the gold text (no space for ASR, one space for QA)."""
    separator = "" if task == "asr" else " "
    return f"{action.token}{separator}{answer}"
