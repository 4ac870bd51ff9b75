"""Minimum-Bayes-risk (MBR) selection over a candidate pool.

Why: the rescoring rewrite's MAP pick (the single best-scored candidate) ignores how much the other
candidates agree with it. Corpus WER rewards the candidate with the fewest *expected* word errors,
and when the score mass is spread over several similar candidates, their consensus beats an outlier
that happens to score highest. MBR makes that explicit:

- posterior ``p(h) = softmax(alpha * s(h))`` over the pool's distinct (normalised) candidates, where
  ``s`` is the rescoring's linear score and ``alpha`` a temperature fitted on training folds only
  (``alpha -> inf`` is MAP, ``alpha = 0`` the unweighted medoid);
- expected risk ``R(h) = sum_h' p(h') * errors(h' -> h)``: word errors (substitutions + deletions +
  insertions, ``jiwer.process_words(reference=h', hypothesis=h)``) of ``h`` if ``h'`` were right;
- the pick is ``argmin R`` (ties: the higher score, then the earlier candidate).

Word errors are counts, not rates: for one utterance the true reference length is fixed, so counts
are what corpus WER sums. Levenshtein counts are symmetric, so each unordered pair is aligned once;
the matrix is cached per candidate set (the policy and the rewrite share it). For ~15 candidates
(~100 pairs, one batched jiwer call) it costs about a millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

Words = tuple[str, ...]


def posterior(scores: Sequence[float], alpha: float) -> np.ndarray:
    """``softmax(alpha * scores)``: sums to 1; uniform for ``alpha = 0``; empty for no candidates."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    z = alpha * (s - s.max())
    p = np.exp(z)
    return p / p.sum()


def _errors_of(chunks) -> int:
    errors = 0
    for c in chunks:
        if c.type in ("substitute", "delete"):
            errors += c.ref_end_idx - c.ref_start_idx
        elif c.type == "insert":
            errors += c.hyp_end_idx - c.hyp_start_idx
    return errors


@lru_cache(maxsize=2048)
def pairwise_word_errors(candidates: tuple[Words, ...]) -> np.ndarray:
    """Symmetric matrix ``E[i, j]`` = word errors between candidates ``i`` and ``j`` (0 on the diagonal).

    One batched ``jiwer.process_words`` call over the non-empty pairs; an empty candidate's errors
    against another are the other's length (jiwer rejects empty references). Read-only result
    (cached)."""
    import jiwer

    n = len(candidates)
    matrix = np.zeros((n, n), dtype=np.float64)
    refs, hyps, where = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            a, b = candidates[i], candidates[j]
            if not a or not b:
                matrix[i, j] = matrix[j, i] = float(len(a) + len(b))
            elif a != b:
                refs.append(" ".join(b))  # h' (the would-be reference) first
                hyps.append(" ".join(a))
                where.append((i, j))
    if refs:
        out = jiwer.process_words(refs, hyps)
        for (i, j), chunks in zip(where, out.alignments):
            matrix[i, j] = matrix[j, i] = float(_errors_of(chunks))
    matrix.setflags(write=False)
    return matrix


def expected_risk(errors: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``R[i] = sum_j p[j] * errors[i, j]``: expected word errors of answering candidate ``i``."""
    return errors @ p if p.size else p


def mbr_index(risk: np.ndarray, scores: Sequence[float], members: Sequence[int] | None = None) -> int | None:
    """The member with the least expected risk (ties: higher score, then lower index); None if empty."""
    idx = list(range(len(risk))) if members is None else list(members)
    if not idx:
        return None
    return min(idx, key=lambda i: (round(float(risk[i]), 9), -scores[i], i))


@dataclass(frozen=True)
class Selection:
    """How a pool's answer is picked: ``map`` (the best score) or ``mbr`` (the least expected risk).

    ``alpha`` is the posterior's temperature; it also defines the expected-risk features the
    reflector reads in either mode (so MAP and MBR artifacts describe the pool the same way)."""

    mode: Literal["map", "mbr"] = "map"
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("map", "mbr"):
            raise ValueError(f"selection mode must be 'map' or 'mbr', not {self.mode!r}")
        if not self.alpha >= 0:
            raise ValueError("alpha must be >= 0")
