"""How sure is "the agent beats the best single system"? A paired bootstrap over the test items.

A corpus WER difference measured on 60 utterances can be a handful of words. The paired bootstrap
(Bisani & Ney, ICASSP 2004) resamples the test set with replacement, recomputes both systems'
corpus WER on each resample (same items for both: paired), and reads the spread of the relative
reduction ``1 - WER(agent) / WER(best single)`` off the resamples:

- a percentile interval (95 % by default) of the relative reduction;
- ``p_not_better``: the share of resamples where the agent is not better (a one-sided bootstrap
  p-value for "the agent is better").

Two resampling units are reported when speakers are known. **Items** (utterances) is the usual ASR
practice. **Speakers** (cluster bootstrap: whole speakers are drawn) respects that one speaker's
utterances share a voice and errors; with few speakers its interval is wide and coarse, which is
the honest picture for a 6-speaker dev set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

Unit = Literal["item", "speaker"]


class BootstrapInterval(BaseModel):
    """The relative error reduction of one system over another, with its bootstrap spread."""

    unit: Unit = Field(description="what was resampled: items (utterances) or whole speakers")
    clusters: int = Field(description="how many items / speakers the resamples draw from")
    resamples: int
    level: float = Field(description="coverage of the percentile interval, e.g. 0.95")
    estimate: float = Field(description="1 - errors(a) / errors(b) on the whole set (same words: the WER ratio)")
    low: float
    high: float
    p_not_better: float = Field(description="share of resamples where system a is not better than b")

    def describe(self) -> str:
        return (
            f"{100 * self.estimate:+.1f}% [{100 * self.low:+.1f}%, {100 * self.high:+.1f}%] "
            f"({100 * self.level:.0f}% interval, {self.resamples} resamples of {self.clusters} {self.unit}s; "
            f"P(not better) = {self.p_not_better:.3f})"
        )


def paired_bootstrap(
    errors_a: Sequence[int],
    errors_b: Sequence[int],
    *,
    groups: Sequence[str] | None = None,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Bootstrap the relative reduction of system a's errors over system b's on the same items.

    ``errors_a`` / ``errors_b``: word (or character) errors per item. Both systems are scored against
    the same references, so the ratio of error sums is the ratio of corpus WERs. ``groups``: one
    label per item (the speaker) to resample whole groups instead of items.
    """
    a = np.asarray(errors_a, dtype=np.float64)
    b = np.asarray(errors_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("errors_a and errors_b need one entry per item, the same items, at least one")
    if b.sum() == 0:
        raise ValueError("the reference system makes no errors: there is nothing to reduce")
    unit: Unit = "item"
    if groups is not None:
        if len(groups) != a.size:
            raise ValueError("groups needs one label per item")
        labels, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        a = np.bincount(index, weights=a, minlength=labels.size)
        b = np.bincount(index, weights=b, minlength=labels.size)
        unit = "speaker"
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, a.size, size=(resamples, a.size))
    sum_a, sum_b = a[draws].sum(axis=1), b[draws].sum(axis=1)
    valid = sum_b > 0  # a resample where b makes no error has no defined ratio; it is left out
    reduction = 1.0 - sum_a[valid] / sum_b[valid]
    tail = (1.0 - level) / 2
    return BootstrapInterval(
        unit=unit,
        clusters=int(a.size),
        resamples=int(valid.sum()),
        level=level,
        estimate=float(1.0 - a.sum() / b.sum()),
        low=float(np.quantile(reduction, tail)),
        high=float(np.quantile(reduction, 1 - tail)),
        p_not_better=float(np.mean(reduction <= 0)),
    )


def reduction_intervals(
    errors_a: Sequence[int],
    errors_b: Sequence[int],
    speakers: Sequence[str | None],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> list[BootstrapInterval]:
    """The item-level interval, plus the speaker-level one when every item has a speaker and there
    are at least 2 speakers."""
    out = [paired_bootstrap(errors_a, errors_b, resamples=resamples, seed=seed)]
    if all(s for s in speakers) and len(set(speakers)) >= 2:
        out.append(
            paired_bootstrap(errors_a, errors_b, groups=[str(s) for s in speakers], resamples=resamples, seed=seed)
        )
    return out
