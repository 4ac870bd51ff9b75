"""Text normalisation shared by routing, voting and evaluation.

Two normalisers, as docs/method.md section 3 asks, and every number we report says which it used:

- ``english``: Whisper's ``EnglishTextNormalizer`` (numbers, spellings, contractions; the Open ASR
  leaderboard uses a drifted fork of it, so leaderboard numbers can differ slightly from ours).
- ``basic``: what the paper's reference scripts use for labels: strip ``<...>``, ``(...)``, ``{...}``
  spans, then Whisper's ``BasicTextNormalizer`` (lower-case, punctuation removed).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

NormalizerName = Literal["english", "basic", "none"]

_SPANS = re.compile(r"<[^>]*>|\([^)]*\)|\{[^}]*\}")


@lru_cache(maxsize=1)
def _english() -> Callable[[str], str]:
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


@lru_cache(maxsize=1)
def _basic() -> Callable[[str], str]:
    from whisper.normalizers import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize_english(text: str) -> str:
    """Whisper's English normaliser, with whitespace collapsed."""
    return " ".join(_english()(text).split())


def normalize_basic(text: str) -> str:
    """The reference scripts' label normaliser: drop bracketed spans, then Whisper's basic normaliser."""
    return " ".join(_basic()(_SPANS.sub(" ", text)).split())


def get_normalizer(name: NormalizerName) -> Callable[[str], str]:
    """Look a normaliser up by name (``english``, ``basic`` or ``none``)."""
    if name == "english":
        return normalize_english
    if name == "basic":
        return normalize_basic
    if name == "none":
        return lambda text: " ".join(text.split())
    raise ValueError(f"unknown normalizer {name!r}; choose 'english', 'basic' or 'none'")
