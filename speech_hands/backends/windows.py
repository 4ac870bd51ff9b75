"""Cutting long audio into model windows and joining per-window N-best lists.

Whisper-style models decode one 30 s window at a time. Longer audio is cut into windows of at most
``window_s``, each cut placed at the quietest 100 ms frame of the window's last 5 s (so words are
rarely split). The windows' N-best lists are combined rank-wise: hypothesis r is the concatenation of
every window's hypothesis min(r, len-1), scored by the duration-weighted mean of the window scores.
That approximates a true N-best over the whole input (the combinations are not re-ranked), and every
backend that decodes windows shares it, so their N-best lists mean the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from speech_hands.audio import SAMPLE_RATE
from speech_hands.types import Hypothesis

__all__ = ["CUT_SEARCH_S", "FRAME_S", "WINDOW_S", "nbest_over_windows", "split_windows"]

WINDOW_S = 30.0
CUT_SEARCH_S = 5.0
FRAME_S = 0.1

#: one window's N-best: (text, score) pairs, best first
WindowBeams = Sequence[tuple[str, float]]


def split_windows(samples: np.ndarray, window_s: float = WINDOW_S) -> list[tuple[int, int]]:
    """Cut points (start, end) in samples: windows of at most ``window_s``, cut at quiet frames."""
    window = int(window_s * SAMPLE_RATE)
    search = int(CUT_SEARCH_S * SAMPLE_RATE)
    frame = int(FRAME_S * SAMPLE_RATE)
    spans, start = [], 0
    while samples.size - start > window:
        lo, hi = start + window - search, start + window
        region = samples[lo:hi]
        n_frames = region.size // frame
        energy = (region[: n_frames * frame].reshape(n_frames, frame) ** 2).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        spans.append((start, cut))
        start = cut
    spans.append((start, samples.size))
    return spans


def nbest_over_windows(
    samples: np.ndarray,
    decode: Callable[[list[np.ndarray]], Sequence[WindowBeams]],
    n_best: int,
    source: str,
) -> list[Hypothesis]:
    """The N-best list of the whole input: ``decode`` maps the windows to their N-best lists."""
    if samples.size == 0:
        return []
    spans = split_windows(samples)
    per_window = decode([samples[s:e] for s, e in spans])
    kept = [(beams, e - s) for beams, (s, e) in zip(per_window, spans) if beams]
    if not kept:
        return []
    total = sum(d for _, d in kept)
    hypotheses: list[Hypothesis] = []
    seen: set[str] = set()
    for rank in range(max(len(beams) for beams, _ in kept)):
        parts = [beams[min(rank, len(beams) - 1)] for beams, _ in kept]
        text = " ".join(t for t, _ in parts)
        if text in seen:
            continue
        seen.add(text)
        score = sum(s * d for (_, s), (_, d) in zip(parts, kept)) / total
        hypotheses.append(Hypothesis(text=text, score=score, source=source, rank=len(hypotheses)))
        if len(hypotheses) == n_best:
            break
    return hypotheses
