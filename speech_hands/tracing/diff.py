"""Word-level diffs of a candidate against a reference, for the trace viewer and ``trace --diff``.

The alignment is jiwer's (``jiwer.process_words(reference, hypothesis).alignments``), on the text as
the WER is computed (:func:`speech_hands.metrics.wer.normalize_for`), so a diff shows exactly the
substitutions, deletions and insertions that the reported WER counts.
"""

from __future__ import annotations

from typing import Literal

import jiwer
from pydantic import BaseModel, Field

from speech_hands.metrics.wer import normalize_for
from speech_hands.text import NormalizerName

__all__ = ["DiffOp", "WordDiff", "word_diff"]


class DiffOp(BaseModel):
    """One aligned chunk: ``equal`` (hits), ``substitute``, ``delete`` (reference words missing from
    the candidate) or ``insert`` (candidate words not in the reference)."""

    op: Literal["equal", "substitute", "delete", "insert"]
    ref: list[str] = Field(default_factory=list)
    hyp: list[str] = Field(default_factory=list)


class WordDiff(BaseModel):
    ops: list[DiffOp]
    errors: int = Field(description="substitutions + deletions + insertions")
    reference_words: int

    @property
    def wer(self) -> float:
        return self.errors / max(1, self.reference_words)


def word_diff(reference: str, hypothesis: str, *, normalizer: NormalizerName = "english") -> WordDiff:
    """The word alignment of ``hypothesis`` against ``reference``, both normalised first."""
    ref = normalize_for(reference or "", normalizer, "word")
    hyp = normalize_for(hypothesis or "", normalizer, "word")
    ref_words, hyp_words = ref.split(), hyp.split()
    if not ref_words and not hyp_words:
        return WordDiff(ops=[], errors=0, reference_words=0)
    out = jiwer.process_words(ref, hyp)
    ops = [
        DiffOp(
            op=chunk.type,
            ref=ref_words[chunk.ref_start_idx : chunk.ref_end_idx],
            hyp=hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx],
        )
        for chunk in out.alignments[0]
    ]
    return WordDiff(ops=ops, errors=out.substitutions + out.deletions + out.insertions, reference_words=len(ref_words))
