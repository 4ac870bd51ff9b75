"""Word (and character) error rates, with the normaliser every number names.

Counts come from ``jiwer.process_words(reference, hypothesis)`` (jiwer 4), always with the
reference FIRST: the paper's reference scripts pass them swapped in places, which divides by the
hypothesis length (docs/method.md section 4). Text is normalised before alignment:

- ``english`` (default for reported WER): Whisper's ``EnglishTextNormalizer`` from openai-whisper.
  The Open ASR leaderboard uses a drifted fork of this normaliser, so leaderboard numbers can differ
  slightly from ours on the same outputs.
- ``basic``: the reference scripts' label normaliser (bracketed spans removed, then Whisper's
  ``BasicTextNormalizer``).
- ``none``: whitespace collapsed only.

Corpus-level WER is the sum of errors over the sum of reference words (not a mean of utterance
WERs). An utterance with an empty reference has 0 reference words: its WER is its number of
insertions (jiwer's convention: errors / max(1, reference words)), and it still adds its insertions to
the corpus numerator. CER (``unit="char"``) aligns characters instead, for languages written without
spaces (e.g. Chinese or Japanese); spaces are removed before character alignment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Literal

import jiwer
from pydantic import BaseModel, ConfigDict, Field

from speech_hands.text import NormalizerName, get_normalizer

Unit = Literal["word", "char"]

__all__ = ["ErrorCounts", "Unit", "corpus_wer", "longest_deletion_run", "normalize_for", "word_errors"]


class ErrorCounts(BaseModel):
    """Alignment counts of one or many utterances; ``wer`` derives from them."""

    model_config = ConfigDict(frozen=True)

    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    utterances: int = Field(default=0, description="how many reference/hypothesis pairs were counted")

    @property
    def reference_length(self) -> int:
        """Reference words (or characters): hits + substitutions + deletions."""
        return self.hits + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """errors / reference length; with an empty reference, the number of insertions."""
        return self.errors / max(1, self.reference_length)

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            hits=self.hits + other.hits,
            substitutions=self.substitutions + other.substitutions,
            deletions=self.deletions + other.deletions,
            insertions=self.insertions + other.insertions,
            utterances=self.utterances + other.utterances,
        )

    def as_row(self) -> dict[str, float | int]:
        """Flat numbers for tables: WER in percent and the S/D/I breakdown."""
        return {
            "wer_pct": round(100 * self.wer, 2),
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "reference_length": self.reference_length,
            "utterances": self.utterances,
        }


@lru_cache(maxsize=1 << 16)
def normalize_for(text: str, normalizer: NormalizerName = "english", unit: Unit = "word") -> str:
    """The text exactly as it is aligned: normalised; for CER also without spaces. Cached: reports
    score the same reference against many systems and oracles."""
    normalized = get_normalizer(normalizer)(text or "")
    return normalized.replace(" ", "") if unit == "char" else normalized


def word_errors(
    reference: str, hypothesis: str, *, normalizer: NormalizerName = "english", unit: Unit = "word"
) -> ErrorCounts:
    """Error counts of one hypothesis against its reference (after normalisation)."""
    ref = normalize_for(reference, normalizer, unit)
    hyp = normalize_for(hypothesis, normalizer, unit)
    out = jiwer.process_characters(ref, hyp) if unit == "char" else jiwer.process_words(ref, hyp)
    return ErrorCounts(
        hits=out.hits,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        utterances=1,
    )


def corpus_wer(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    normalizer: NormalizerName = "english",
    unit: Unit = "word",
) -> ErrorCounts:
    """Corpus-level counts: errors summed over utterances, divided by summed reference length."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    return sum_counts(word_errors(r, h, normalizer=normalizer, unit=unit) for r, h in zip(references, hypotheses))


def sum_counts(counts: Iterable[ErrorCounts]) -> ErrorCounts:
    total = ErrorCounts()
    for c in counts:
        total = total + c
    return total


def longest_deletion_run(reference: str, hypothesis: str, *, normalizer: NormalizerName = "english") -> int:
    """The most consecutive reference words the hypothesis leaves out (after normalisation): a lost
    sentence of long audio shows up here even when the WER looks fine."""
    ref = normalize_for(reference, normalizer)
    hyp = normalize_for(hypothesis, normalizer)
    if not ref.split():
        return 0
    if not hyp.split():
        return len(ref.split())
    out = jiwer.process_words(ref, hyp)
    runs = [c.ref_end_idx - c.ref_start_idx for c in out.alignments[0] if c.type == "delete"]
    return max(runs, default=0)
