"""Multiple-choice AudioQA scoring (DCASE 2025 style).

Options look like ``"B. In the middle"``. A free-form prediction is resolved to an option index:

``exact`` mode (the paper's "normalised text equals the normalised gold option", widened to the forms
models actually write):

1. the whole prediction equals a whole option (``"b in the middle"`` == ``"B. In the middle"``);
2. or equals an option's text without its letter (``"in the middle"``);
3. or is just a letter, alone or framed (``"B"``, ``"(B)"``, ``"B."``, ``"Answer: B"``,
   ``"The answer is B"``);
4. or starts with a letter and a delimiter (``"B) in the middle, because ..."``).

``contains`` mode adds: exactly one option's text occurs in the prediction as whole words (two or more
-> ambiguous -> unresolved). An unresolved prediction is wrong, and counted as unparseable
separately (never replaced by anything). Normalisation is Whisper's basic normaliser (lower case,
punctuation removed). Without options, exact mode compares normalised texts and contains mode looks
for the gold text inside the prediction.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel

from speech_hands.text import normalize_basic

MatchMode = Literal["exact", "contains"]

__all__ = ["AccuracyRow", "MatchMode", "accuracy_by_category", "is_correct", "option_letter", "resolve_choice"]

_OPTION = re.compile(r"^\s*\(?([A-Za-z])\s*[\.\):]\s*(.*)$", re.S)
_LETTER_ONLY = re.compile(
    r"^\s*(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)?\s*(?:is)?\s*[:\-]?\s*\(?([A-Za-z])\)?\s*\.?\s*$", re.I
)
_LEADING_LETTER = re.compile(r"^\s*\(?([A-Za-z])\s*[\.\):]\s+\S")


def option_letter(option: str) -> str | None:
    """``"B. In the middle"`` -> ``"B"``; None when the option has no letter label."""
    m = _OPTION.match(option)
    return m.group(1).upper() if m else None


def _option_text(option: str) -> str:
    m = _OPTION.match(option)
    return m.group(2) if m else option


def resolve_choice(prediction: str, choices: Sequence[str], mode: MatchMode = "exact") -> int | None:
    """Index of the option ``prediction`` names, or None (unparseable / ambiguous)."""
    if not prediction or not prediction.strip() or not choices:
        return None
    norm = normalize_basic(prediction)
    full = [normalize_basic(c) for c in choices]
    texts = [normalize_basic(_option_text(c)) for c in choices]
    letters = [option_letter(c) for c in choices]
    if norm in full:
        return full.index(norm)
    if norm and norm in texts and texts.count(norm) == 1:
        return texts.index(norm)
    for pattern in (_LETTER_ONLY, _LEADING_LETTER):
        m = pattern.match(prediction)
        if m and m.group(1).upper() in letters:
            return letters.index(m.group(1).upper())
    if mode == "contains":
        padded = f" {norm} "
        hits = [i for i, t in enumerate(texts) if t and f" {t} " in padded]
        if len(hits) == 1:
            return hits[0]
    return None


def is_correct(prediction: str, answer: str, choices: Sequence[str] = (), mode: MatchMode = "exact") -> bool:
    """Whether ``prediction`` names the gold ``answer`` (itself one of ``choices`` when given)."""
    if not choices:
        norm_pred, norm_gold = normalize_basic(prediction or ""), normalize_basic(answer)
        if mode == "contains":
            return bool(norm_gold) and f" {norm_gold} " in f" {norm_pred} "
        return norm_pred == norm_gold
    gold = resolve_choice(answer, choices, "exact")
    if gold is None:
        raise ValueError(f"gold answer {answer!r} is not one of the options {list(choices)}")
    return resolve_choice(prediction, choices, mode) == gold


class AccuracyRow(BaseModel):
    category: str
    correct: int
    total: int
    unparseable: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def accuracy_by_category(rows: Iterable[tuple[str | None, bool, bool]], *, overall: str = "all") -> list[AccuracyRow]:
    """``(category, correct, parsed)`` triples -> one row per category plus an overall row."""
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for category, correct, parsed in rows:
        for key in (category or "uncategorised", overall):
            tally[key][0] += int(correct)
            tally[key][1] += 1
            tally[key][2] += int(not parsed)
    ordered = sorted(k for k in tally if k != overall) + ([overall] if overall in tally else [])
    return [AccuracyRow(category=k, correct=tally[k][0], total=tally[k][1], unparseable=tally[k][2]) for k in ordered]
