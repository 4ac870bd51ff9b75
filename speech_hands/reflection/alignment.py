"""ROVER-style combination of several word sequences by weighted voting on an aligned network.

Position-wise voting fails as soon as one hypothesis has an extra or a missing word: every later
position is compared with the wrong word. ROVER (Fiscus, 1997) instead aligns the hypotheses into a
word transition network (WTN) and votes per slot. This module does the same:

1. The hypotheses are taken by decreasing weight; the first becomes the network (one slot per word).
2. Each next hypothesis is aligned to the network with an edit-distance dynamic programme whose
   costs see the whole slot: matching a word already in the slot costs 0, any other word 1;
   skipping a slot costs 0 if the slot already has a null arc, else 1; a word with no slot costs 1
   and opens a new slot, in which every earlier hypothesis gets a null arc with its weight.
   Backtrace ties prefer, in order: match/substitute, skip, insert (deterministic).
3. Each slot emits its heaviest word; a null winning means the slot emits nothing. Ties go to the
   word seen first (from the heaviest hypothesis). A word's confidence is its share of the slot's
   total weight.

Input words are expected to be normalised already (the rewriter does that).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

NULL = ""


@dataclass
class _Slot:
    weights: dict[str, float] = field(default_factory=dict)
    first_seen: dict[str, int] = field(default_factory=dict)

    def add(self, word: str, weight: float, order: int) -> None:
        self.weights[word] = self.weights.get(word, 0.0) + weight
        self.first_seen.setdefault(word, order)

    def best(self) -> tuple[str, float]:
        word = min(self.weights, key=lambda w: (-self.weights[w], self.first_seen[w]))
        total = sum(self.weights.values())
        return word, (self.weights[word] / total if total > 0 else 0.0)


@dataclass(frozen=True)
class CombinedText:
    """The voted word sequence and each word's share of its slot's weight."""

    words: tuple[str, ...]
    confidences: tuple[float, ...]
    n_slots: int

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def mean_confidence(self) -> float:
        return sum(self.confidences) / len(self.confidences) if self.confidences else 0.0


def _align(network: list[_Slot], words: Sequence[str]) -> list[tuple[str, int, int]]:
    """Edit-distance alignment of ``words`` to the network; returns ops (kind, slot j, word i)."""
    n, m = len(network), len(words)
    inf = math.inf
    cost = [[inf] * (n + 1) for _ in range(m + 1)]
    cost[0][0] = 0.0
    skip_cost = [0.0 if NULL in slot.weights else 1.0 for slot in network]
    for i in range(m + 1):
        for j in range(n + 1):
            here = cost[i][j]
            if i == 0 and j == 0:
                continue
            best = inf
            if i > 0 and j > 0:
                sub = 0.0 if words[i - 1] in network[j - 1].weights else 1.0
                best = min(best, cost[i - 1][j - 1] + sub)
            if j > 0:
                best = min(best, cost[i][j - 1] + skip_cost[j - 1])
            if i > 0:
                best = min(best, cost[i - 1][j] + 1.0)
            cost[i][j] = min(here, best)
    ops: list[tuple[str, int, int]] = []
    i, j = m, n
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            sub = 0.0 if words[i - 1] in network[j - 1].weights else 1.0
            if cost[i][j] == cost[i - 1][j - 1] + sub:
                ops.append(("match", j - 1, i - 1))
                i, j = i - 1, j - 1
                continue
        if j > 0 and cost[i][j] == cost[i][j - 1] + skip_cost[j - 1]:
            ops.append(("skip", j - 1, -1))
            j -= 1
            continue
        ops.append(("insert", j, i - 1))  # new slot before network slot j
        i -= 1
    ops.reverse()
    return ops


def combine(hypotheses: Sequence[tuple[Sequence[str], float]]) -> CombinedText:
    """Combine ``(words, weight)`` pairs by aligned weighted voting (see module docstring)."""
    ranked = sorted(
        ((list(words), float(weight), k) for k, (words, weight) in enumerate(hypotheses) if weight > 0),
        key=lambda item: (-item[1], item[2]),
    )
    if not ranked:
        return CombinedText(words=(), confidences=(), n_slots=0)
    network: list[_Slot] = []
    seen_weight = 0.0
    for order, (words, weight, _) in enumerate(ranked):
        if order == 0:
            for word in words:
                slot = _Slot()
                slot.add(word, weight, order)
                network.append(slot)
            seen_weight = weight
            continue
        new_network: list[_Slot] = []
        pending: list[_Slot] = []  # slots opened by insertions before network slot j
        ops = _align(network, words)
        by_slot: dict[int, list[tuple[str, int]]] = {}
        for kind, j, i in ops:
            by_slot.setdefault(j, []).append((kind, i))
        for j in range(len(network) + 1):
            for kind, i in by_slot.get(j, []):
                if kind == "insert":
                    slot = _Slot()
                    if seen_weight > 0:
                        slot.add(NULL, seen_weight, -1)
                    slot.add(words[i], weight, order)
                    pending.append(slot)
            new_network.extend(pending)
            pending = []
            if j < len(network):
                slot = network[j]
                for kind, i in by_slot.get(j, []):
                    if kind == "match":
                        slot.add(words[i], weight, order)
                    elif kind == "skip":
                        slot.add(NULL, weight, order)
                new_network.append(slot)
        network = new_network
        seen_weight += weight
    words_out: list[str] = []
    confidences: list[float] = []
    for slot in network:
        word, confidence = slot.best()
        if word != NULL:
            words_out.append(word)
            confidences.append(confidence)
    return CombinedText(words=tuple(words_out), confidences=tuple(confidences), n_slots=len(network))
