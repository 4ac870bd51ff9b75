"""Two evaluation runs of the same items, compared item by item (``speech-hands eval compare``).

The question a researcher asks after changing a policy, a reflector or a model: *is run A really
better than run B on these items, or is it noise?* Both runs' agents are scored against the same
references (same normaliser); items are matched by id (only those both runs finished count), and
the paired bootstrap of :mod:`speech_hands.metrics.significance` gives the interval of A's relative
reduction over B, over utterances and over speakers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from speech_hands.errors import ConfigurationError
from speech_hands.evals.runner import ItemResult, load_results
from speech_hands.metrics.significance import BootstrapInterval, reduction_intervals
from speech_hands.metrics.wer import Unit, word_errors
from speech_hands.text import NormalizerName


class RunComparison(BaseModel):
    """Agent A vs agent B on the items both runs scored."""

    run_a: str
    run_b: str
    items: int = Field(description="items both runs have (matched by id)")
    only_a: int = Field(description="items only run A has (left out)")
    only_b: int = Field(description="items only run B has (left out)")
    reference_words: int
    errors_a: int
    errors_b: int
    a_better: int = Field(description="items where A makes fewer errors")
    b_better: int = Field(description="items where B makes fewer errors")
    same: int
    action_changes: dict[str, int] = Field(description="'B action -> A action': count, where they differ")
    intervals: list[BootstrapInterval] = Field(description="A's relative reduction over B (items; speakers)")

    @property
    def wer_a(self) -> float:
        return self.errors_a / max(1, self.reference_words)

    @property
    def wer_b(self) -> float:
        return self.errors_b / max(1, self.reference_words)


def compare_results(
    results_a: Sequence[ItemResult],
    results_b: Sequence[ItemResult],
    *,
    run_a: str = "A",
    run_b: str = "B",
    normalizer: NormalizerName = "english",
    unit: Unit = "word",
    resamples: int = 2000,
) -> RunComparison:
    """Compare the agents of two ASR runs on their common items (by id)."""
    by_id_b = {r.id: r for r in results_b}
    pairs = [(a, by_id_b[a.id]) for a in results_a if a.id in by_id_b]
    if not pairs:
        raise ConfigurationError(f"{run_a} and {run_b} have no item in common (items are matched by id)")
    if any(a.task != "asr" for a, _ in pairs):
        raise ConfigurationError("eval compare scores ASR runs (WER); these results are AudioQA")
    mismatched = [a.id for a, b in pairs if (a.reference or "") != (b.reference or "")]
    if mismatched:
        raise ConfigurationError(
            f"the runs disagree on the reference of {len(mismatched)} item(s), e.g. {mismatched[0]!r}"
        )
    counts_a = [word_errors(a.reference or "", a.prediction, normalizer=normalizer, unit=unit) for a, _ in pairs]
    counts_b = [word_errors(b.reference or "", b.prediction, normalizer=normalizer, unit=unit) for _, b in pairs]
    errors_a = [c.errors for c in counts_a]
    errors_b = [c.errors for c in counts_b]
    changes: dict[str, int] = {}
    for a, b in pairs:
        act_a = a.action.value if a.action else "none"
        act_b = b.action.value if b.action else "none"
        if act_a != act_b:
            key = f"{act_b} -> {act_a}"
            changes[key] = changes.get(key, 0) + 1
    intervals = (
        reduction_intervals(errors_a, errors_b, [a.speaker for a, _ in pairs], resamples=resamples)
        if sum(errors_b) > 0
        else []
    )
    ids_a, ids_b = {r.id for r in results_a}, set(by_id_b)
    return RunComparison(
        run_a=run_a,
        run_b=run_b,
        items=len(pairs),
        only_a=len(ids_a - ids_b),
        only_b=len(ids_b - ids_a),
        reference_words=sum(c.reference_length for c in counts_a),
        errors_a=sum(errors_a),
        errors_b=sum(errors_b),
        a_better=sum(ea < eb for ea, eb in zip(errors_a, errors_b)),
        b_better=sum(ea > eb for ea, eb in zip(errors_a, errors_b)),
        same=sum(ea == eb for ea, eb in zip(errors_a, errors_b)),
        action_changes=dict(sorted(changes.items(), key=lambda kv: -kv[1])),
        intervals=intervals,
    )


def compare_runs(folder_a: str | Path, folder_b: str | Path, **options) -> RunComparison:
    """:func:`compare_results` over two ``eval run`` output folders."""
    loaded = []
    for folder in (folder_a, folder_b):
        results = load_results(Path(folder) / "results.jsonl")
        if not results:
            raise ConfigurationError(
                f"no results in {Path(folder) / 'results.jsonl'}; run `speech-hands eval run` first"
            )
        loaded.append(results)
    return compare_results(loaded[0], loaded[1], run_a=str(folder_a), run_b=str(folder_b), **options)
