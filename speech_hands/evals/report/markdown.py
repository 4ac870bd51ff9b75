"""The readable page of a report (``report.md``): the systems tables, the headline numbers, the
routing confusion and per-action scores, links to the plots and the failed items.

Rendering only: it reads an :class:`~speech_hands.evals.report.model.EvalReport` and returns text,
so the same report renders the same page whether it was just built or loaded back from JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from speech_hands.evals.report.model import EvalReport, SystemScore
from speech_hands.metrics.wer import ErrorCounts

__all__ = ["render_markdown"]


def _pct(x: float | None) -> str:
    """A 0..1 rate as a percentage with two decimals; ``-`` when there is none."""
    return "-" if x is None else f"{100 * x:.2f}"


def _systems_table(rows: Sequence[SystemScore], task: str) -> list[str]:
    """Markdown table lines: WER with error counts (ASR, the agent in bold) or accuracy per category (QA)."""
    if task == "qa":
        cats = list(dict.fromkeys(c.category for s in rows for c in s.per_category))
        lines = ["| system | accuracy % | " + " | ".join(cats) + " |", "|---|---:|" + "---:|" * len(cats)]
        for s in rows:
            per = {c.category: _pct(c.accuracy) for c in s.per_category}
            lines.append(f"| {s.name} | {_pct(s.accuracy)} | " + " | ".join(per.get(c, "-") for c in cats) + " |")
        return lines
    lines = ["| system | WER % | sub | del | ins | ref words |", "|---|---:|---:|---:|---:|---:|"]
    for s in rows:
        c = s.counts or ErrorCounts()
        name = f"**{s.name}**" if s.kind == "agent" else s.name
        lines.append(
            f"| {name} | {_pct(s.wer)} | {c.substitutions} | {c.deletions} | {c.insertions} | {c.reference_length} |"
        )
    return lines


def render_markdown(report: EvalReport, plots: Sequence[str] = ()) -> str:
    """The ``report.md`` page of ``report`` (``plots``: PNG paths written next to it, linked by file name)."""
    r = report
    metric = "WER" if r.task == "asr" else "accuracy"
    lines = [
        f"# Evaluation report: {r.name}",
        "",
        f"{r.created}; {r.items} items ({r.failed_items} failed to run, {r.skipped_items} skipped by the agent); "
        f"task {r.task}; normaliser: {r.normalizer}; {r.unit}-level; {r.seconds_per_item:.2f} s per item.",
        "",
        *(
            [f"Run settings: {', '.join(f'{k}={v}' for k, v in r.run_settings.items() if v is not None)}.", ""]
            if r.run_settings
            else []
        ),
        "## Systems",
        "",
        *_systems_table(r.systems, r.task),
        "",
    ]
    if r.best_single:
        lines.append(f"- best single system in the pool: {r.best_single}")
    if r.relative_reduction is not None:
        lines.append(
            f"- relative {metric} reduction of the agent vs the best single system: {100 * r.relative_reduction:+.1f}% "
            "(negative = the agent is worse; the paper reports +12.1% WER reduction)"
        )
    for interval in r.reduction_intervals:
        lines.append(f"- paired bootstrap of that reduction, resampling {interval.unit}s: {interval.describe()}")
    if r.gap_closed is not None:
        lines.append(f"- gap closed toward the oracle router: {r.gap_closed:.2f}")
    lines.append(f"- where final answers came from: {r.actions}; mean rewrites per item {r.mean_rewrites:.2f}")
    lines.append("")
    for dataset, rows in r.per_dataset.items():
        lines += [f"### {dataset}", "", *_systems_table(rows, r.task), ""]
    a = r.routing
    names = list(next(iter(a.confusion.values())).keys())
    lines += [
        "## Routing (first-token action vs gold)",
        "",
        f"Gold labels: {a.rule}. {a.labelled} items labelled, {a.unlabelled} without a label; "
        f"{a.rewrite_candidates} labelled items had a rewrite candidate.",
        "",
        "| gold \\ predicted | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        *[f"| {g} | " + " | ".join(str(row[p]) for p in names) + " |" for g, row in a.confusion.items()],
        "",
        "| action | precision | recall | F1 | gold items | predicted |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {s.action} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.support} | {s.predicted} |"
            for s in a.scores
        ],
        "",
        f"Action accuracy {a.accuracy:.3f}, macro F1 {a.macro_f1:.3f} (over actions present in the gold labels).",
        "",
    ]
    if plots:
        lines += ["## Plots", "", *[f"![{Path(p).stem}]({Path(p).name})" for p in plots], ""]
    if r.failures:
        lines += ["## Items that failed", "", *[f"- {f}" for f in r.failures[:50]], ""]
    return "\n".join(lines)
