"""Cutting long audio into model windows and segments, and joining per-window N-best lists.

Whisper-style models decode one 30 s window at a time. Two ways to cut longer audio live here:

- :func:`speech_segments`: the agent's segments of long audio (each routed on its own). Voice-activity
  detection (Silero, shipped in faster-whisper) finds the pauses; the audio is tiled by segments of at
  most ``max_s`` (default :data:`SEGMENT_S`, 20 s), each cut in the longest pause of the second half
  of its span (a sentence boundary, usually), or at the quietest 100 ms frame of its last 5 s when it
  has no pause. Stretches with no speech for :data:`LONG_PAUSE_S` or more become segments of their own
  (the routing graph then skips them as "no speech") instead of padding a speech segment with
  silence. The segments tile the input: every sample is in exactly one. Why 20 s and the longest
  pause: on the 60 LibriSpeech dev utterances concatenated (7.6 min), Whisper base's top-1 over
  segments cut this way scores 9.7 % WER (longest run of deleted words: 3), against 13.4 % over 30 s
  windows cut at quiet frames and 16.8 % over 30 s VAD segments (runs of 37 and 43 deleted words:
  without timestamps, Whisper often stops decoding a full 30 s window early); 25 s scores 10.3 %,
  15 s 11.3 % (more cuts, and more of them inside a sentence).
- :func:`split_windows`: windows of at most ``window_s``, each cut at the quietest 100 ms frame of the
  window's last 5 s (used by backends that need plain 30 s windows, e.g. for audio QA).

:func:`nbest_over_windows` is how a backend given long audio directly returns one N-best list: it
cuts with :func:`speech_segments`, decodes at most ``batch`` windows per call (memory stays flat in
the duration) and combines the windows' N-best lists rank-wise: hypothesis r is the concatenation
of every window's hypothesis min(r, len-1), scored by the duration-weighted mean of the window
scores. That approximates a true N-best over the whole input (the combinations are not re-ranked),
and every backend that decodes windows shares it, so their N-best lists mean the same thing. The
agent does not rely on it: it routes long audio segment by segment
(:mod:`speech_hands.graphs.segments`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from speech_hands.audio import SAMPLE_RATE, SEGMENT_S
from speech_hands.types import Hypothesis

__all__ = [
    "CUT_SEARCH_S",
    "FRAME_S",
    "LONG_PAUSE_S",
    "SEGMENT_S",
    "WINDOW_S",
    "nbest_over_windows",
    "speech_segments",
    "split_in_two",
    "split_windows",
]

WINDOW_S = 30.0
CUT_SEARCH_S = 5.0
FRAME_S = 0.1
#: A stretch without speech at least this long (seconds) is a segment of its own.
LONG_PAUSE_S = 5.0
#: Voice-activity detection for cutting: Silero's default threshold, pauses of 300 ms or more, speech
#: padded by 100 ms (the padding stays with the speech; cuts fall in the middle of what is left).
VAD_CUT_THRESHOLD = 0.5
VAD_MIN_PAUSE_MS = 300
VAD_PAD_MS = 100
#: Voice-activity detection runs over blocks of this many seconds (its memory stays flat in the duration).
VAD_BLOCK_S = 300.0
#: Windows decoded per call by :func:`nbest_over_windows`.
DECODE_BATCH = 4

#: one window's N-best: (text, score) pairs, best first
WindowBeams = Sequence[tuple[str, float]]


def _quiet_cut(samples: np.ndarray, lo: int, hi: int) -> int:
    """The middle of the quietest 100 ms frame of ``samples[lo:hi]``."""
    frame = int(FRAME_S * SAMPLE_RATE)
    region = samples[lo:hi]
    n_frames = region.size // frame
    if n_frames == 0:
        return (lo + hi) // 2
    energy = (region[: n_frames * frame].reshape(n_frames, frame) ** 2).mean(axis=1)
    return lo + int(np.argmin(energy)) * frame + frame // 2


def split_windows(samples: np.ndarray, window_s: float = WINDOW_S) -> list[tuple[int, int]]:
    """Cut points (start, end) in samples: windows of at most ``window_s``, cut at quiet frames."""
    window = int(window_s * SAMPLE_RATE)
    search = int(CUT_SEARCH_S * SAMPLE_RATE)
    spans, start = [], 0
    while samples.size - start > window:
        cut = _quiet_cut(samples, start + window - search, start + window)
        spans.append((start, cut))
        start = cut
    spans.append((start, samples.size))
    return spans


def speech_spans(samples: np.ndarray) -> list[tuple[int, int]]:
    """Where voice-activity detection finds speech: (start, end) in samples, padded, in order.

    Silero VAD (in faster-whisper) over blocks of :data:`VAD_BLOCK_S`; a span cut by a block
    boundary is joined again."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=VAD_CUT_THRESHOLD, min_silence_duration_ms=VAD_MIN_PAUSE_MS, speech_pad_ms=VAD_PAD_MS
    )
    block = int(VAD_BLOCK_S * SAMPLE_RATE)
    spans: list[tuple[int, int]] = []
    for offset in range(0, samples.size, block):
        for found in get_speech_timestamps(samples[offset : offset + block], options, sampling_rate=SAMPLE_RATE):
            start, end = found["start"] + offset, found["end"] + offset
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
    return spans


def _tile(samples: np.ndarray, start: int, end: int, pauses: list[tuple[int, int]], max_n: int) -> list[int]:
    """Cut points inside ``(start, end)`` so no piece is longer than ``max_n`` samples: in each piece,
    the middle of the longest pause (``(position, length)``) in its second half, else its quietest frame."""
    cuts, at = [], start
    search = min(int(CUT_SEARCH_S * SAMPLE_RATE), max_n // 2)
    while end - at > max_n:
        lo, hi = at + max_n // 2, at + max_n
        inside = [p for p in pauses if lo <= p[0] <= hi]
        cut = max(inside, key=lambda p: (p[1], p[0]))[0] if inside else _quiet_cut(samples, hi - search, hi)
        cuts.append(cut)
        at = cut
    return cuts


def speech_segments(samples: np.ndarray, max_s: float = SEGMENT_S) -> list[tuple[int, int]]:
    """Segments (start, end) in samples that tile ``samples``, none longer than ``max_s``, cut in pauses.

    See the module docstring: the cut is the longest pause in the second half of each segment's
    span; a stretch of :data:`LONG_PAUSE_S` or more without speech is a segment of its own."""
    n = samples.size
    max_n = int(max_s * SAMPLE_RATE)
    if n <= max_n:
        return [(0, n)]
    spans = speech_spans(samples)
    long_pause = int(LONG_PAUSE_S * SAMPLE_RATE)
    # regions: runs of speech whose pauses are shorter than LONG_PAUSE_S, and the long pauses between them
    bounds: list[int] = [0]
    pauses: list[tuple[int, int]] = []  # (middle, length) of the pauses inside speech regions
    for (_, end_a), (start_b, _) in itertools.pairwise(spans):
        if start_b - end_a >= long_pause:
            bounds += [end_a, start_b]
        else:
            pauses.append(((end_a + start_b) // 2, start_b - end_a))
    if spans and spans[0][0] >= long_pause:
        bounds.append(spans[0][0])
    if spans and n - spans[-1][1] >= long_pause:
        bounds.append(spans[-1][1])
    bounds = sorted({b for b in [*bounds, n] if 0 <= b <= n})
    cuts: list[int] = []
    for lo, hi in itertools.pairwise(bounds):
        cuts += [lo, *_tile(samples, lo, hi, pauses, max_n)]
    cuts = sorted({*cuts, 0})
    return [(a, b) for a, b in zip(cuts, [*cuts[1:], n]) if b > a]


def nbest_over_windows(
    samples: np.ndarray,
    decode: Callable[[list[np.ndarray]], Sequence[WindowBeams]],
    n_best: int,
    source: str,
    *,
    batch: int = DECODE_BATCH,
) -> list[Hypothesis]:
    """The N-best list of the whole input: ``decode`` maps windows (at most ``batch`` per call) to
    their N-best lists. Input of one window is decoded as it is."""
    if samples.size == 0:
        return []
    spans = [(0, samples.size)] if samples.size <= WINDOW_S * SAMPLE_RATE else speech_segments(samples)
    per_window: list[WindowBeams] = []
    for i in range(0, len(spans), batch):
        per_window += decode([samples[s:e] for s, e in spans[i : i + batch]])
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


def split_in_two(samples: np.ndarray, min_part_s: float = 2.0) -> int | None:
    """Where to cut a segment in two: the middle of its longest pause with at least ``min_part_s`` on
    either side, else its quietest frame in the middle third; None when it is too short to cut."""
    n = samples.size
    min_part = int(min_part_s * SAMPLE_RATE)
    if n < 2 * min_part:
        return None
    spans = speech_spans(samples)
    pauses = [((a + b) // 2, b - a) for (_, a), (b, _) in itertools.pairwise(spans)]
    inside = [p for p in pauses if min_part <= p[0] <= n - min_part]
    if inside:
        return max(inside, key=lambda p: (p[1], -abs(p[0] - n // 2)))[0]
    return _quiet_cut(samples, max(min_part, n // 3), min(n - min_part, 2 * n // 3))
