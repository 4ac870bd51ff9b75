"""Turning item results into a report: numbers (JSON), a readable page (Markdown), a per-item CSV
and plots. Every number says which normaliser and label rule produced it.

ASR systems compared (see :mod:`speech_hands.evals.routing` for the oracle definitions): the
internal top-1, every external tool's top-1, every recorded system in the manifest, the agent,
best-of-two, the oracle router and the oracle over all N-best candidates. AudioQA: accuracy of the
same rows, per category (DCASE 2025 style), with unparseable predictions counted.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from speech_hands.evals.routing import RoutingAnalysis, analyse_routing, gap_closed
from speech_hands.evals.runner import ItemResult
from speech_hands.metrics.labels import GoldLabel, LabelRule
from speech_hands.metrics.qa import AccuracyRow, accuracy_by_category, is_correct, resolve_choice
from speech_hands.metrics.significance import BootstrapInterval, reduction_intervals
from speech_hands.metrics.wer import ErrorCounts, Unit, sum_counts, word_errors
from speech_hands.text import NormalizerName

__all__ = ["EvalReport", "SystemScore", "build_report", "write_report"]


class SystemScore(BaseModel):
    """One row of the systems table."""

    name: str
    kind: str = Field(description="pool (internal / external top-1), recorded, agent, oracle")
    wer: float | None = Field(default=None, description="ASR: corpus WER, 0..1")
    counts: ErrorCounts | None = None
    accuracy: float | None = Field(default=None, description="AudioQA: 0..1")
    per_category: list[AccuracyRow] = Field(default_factory=list)
    items: int = 0


class EvalReport(BaseModel):
    name: str
    created: str
    run_settings: dict = Field(
        default_factory=dict, description="how the agent was run (the run folder's run.json): models, policy, reflector"
    )
    task: str
    items: int
    failed_items: int = Field(description="items that could not be run (bad audio, ...): counted, not dropped")
    skipped_items: int = Field(description="items the agent skipped (silent audio, every tool failed)")
    normalizer: str
    unit: str
    label_rule: str
    systems: list[SystemScore]
    per_dataset: dict[str, list[SystemScore]] = Field(default_factory=dict)
    best_single: str | None = None
    relative_reduction: float | None = Field(
        default=None, description="ASR: 1 - agent WER / best single WER (the paper's -12.1% is 0.121)"
    )
    gap_closed: float | None = None
    reduction_intervals: list[BootstrapInterval] = Field(
        default_factory=list,
        description="ASR: paired bootstrap of the relative reduction vs the best single system (items; speakers)",
    )
    routing: RoutingAnalysis
    actions: dict[str, int] = Field(default_factory=dict, description="where final answers came from")
    mean_rewrites: float = 0.0
    seconds_per_item: float = 0.0
    failures: list[str] = Field(default_factory=list, description="id: error, for failed items")

    def system(self, name: str) -> SystemScore:
        return next(s for s in self.systems if s.name == name)


# ---------------------------------------------------------------------------------------- ASR


def _asr_systems(
    results: Sequence[ItemResult], normalizer: NormalizerName, unit: Unit
) -> list[tuple[str, str, list[str]]]:
    """(name, kind, one text per item) of every ASR system the report compares."""

    def best_of(options_per_item: Sequence[Sequence[str]]) -> list[str]:
        chosen = []
        for r, options in zip(results, options_per_item):
            pool = [o for o in options if o is not None] or [""]
            chosen.append(
                min(pool, key=lambda t: word_errors(r.reference or "", t, normalizer=normalizer, unit=unit).errors)
            )
        return chosen

    internal_name = next((r.internal.tool for r in results if r.internal is not None), "internal")
    external_names: list[str] = []
    for r in results:
        for o in r.externals:
            if o.tool not in external_names:
                external_names.append(o.tool)

    def top_of(r: ItemResult, tool: str) -> str:
        out = next((o for o in r.candidates if o.tool == tool), None)
        return r.top(out)

    systems = [(f"internal: {internal_name}", "pool", [r.top(r.internal) for r in results])]
    systems += [(f"external top-1: {t}", "pool", [top_of(r, t) for r in results]) for t in external_names]
    recorded: list[str] = []
    for r in results:
        recorded += [s for s in r.systems if s not in recorded]
    systems += [(f"recorded: {s}", "recorded", [r.systems.get(s, "") for r in results]) for s in recorded]
    systems.append(("agent", "agent", [r.prediction for r in results]))
    tops = [[r.top(r.internal), *(r.top(o) for o in r.externals)] for r in results]
    systems.append(("best-of-two (per-item oracle, no rewrite)", "oracle", best_of(tops)))
    systems.append(
        (
            "oracle router (internal / external top-1 / rewrite)",
            "oracle",
            best_of([[*t, r.rewrite_candidate] for t, r in zip(tops, results)]),
        )
    )
    every = [[h.text for o in r.candidates for h in o.hypotheses] + [r.rewrite_candidate] for r in results]
    systems.append(("oracle over all N-best candidates", "oracle", best_of(every)))
    return systems


def _item_errors(
    results: Sequence[ItemResult], texts: Sequence[str], normalizer: NormalizerName, unit: Unit
) -> list[ErrorCounts]:
    """Per-item error counts (failed items count with empty hypotheses: nothing is dropped)."""
    return [word_errors(r.reference or "", t, normalizer=normalizer, unit=unit) for r, t in zip(results, texts)]


def _asr_rows(
    results: Sequence[ItemResult],
    normalizer: NormalizerName,
    unit: Unit,
    systems: list[tuple[str, str, list[str]]] | None = None,
) -> list[SystemScore]:
    """Systems table over ``results`` (``systems``: :func:`_asr_systems` of them, if already made)."""
    rows = []
    for name, kind, texts in systems if systems is not None else _asr_systems(results, normalizer, unit):
        c = sum_counts(_item_errors(results, texts, normalizer, unit))
        rows.append(SystemScore(name=name, kind=kind, wer=c.wer, counts=c, items=len(texts)))
    return rows


def _asr_intervals(
    results: Sequence[ItemResult],
    systems: list[tuple[str, str, list[str]]],
    best: str,
    normalizer: NormalizerName,
    unit: Unit,
) -> list[BootstrapInterval]:
    """Bootstrap intervals of the agent's relative reduction over the best single system ``best``."""
    texts = {name: t for name, _, t in systems}
    agent = [c.errors for c in _item_errors(results, texts["agent"], normalizer, unit)]
    single = [c.errors for c in _item_errors(results, texts[best], normalizer, unit)]
    if sum(single) == 0:
        return []
    return reduction_intervals(agent, single, [r.speaker for r in results])


# ---------------------------------------------------------------------------------------- QA


def _qa_rows(results: Sequence[ItemResult], rule: LabelRule) -> list[SystemScore]:
    def row(name: str, kind: str, predictions: Sequence[str | None]) -> SystemScore:
        triples = []
        for r, p in zip(results, predictions):
            parsed = p is not None and resolve_choice(p, r.choices, rule.qa_match) is not None
            correct = p is not None and is_correct(p, r.answer or "", r.choices, rule.qa_match)
            triples.append((r.category, correct, parsed or not r.choices))
        table = accuracy_by_category(triples)
        overall = table[-1]
        return SystemScore(name=name, kind=kind, accuracy=overall.accuracy, per_category=table[:-1], items=len(results))

    def oracle(options: Sequence[Sequence[str | None]]) -> list[str | None]:
        chosen = []
        for r, opts in zip(results, options):
            right = next(
                (o for o in opts if o is not None and is_correct(o, r.answer or "", r.choices, rule.qa_match)), None
            )
            chosen.append(right if right is not None else (opts[0] if opts else None))
        return chosen

    internal_name = next((r.internal.tool for r in results if r.internal is not None), "internal")
    external_names = list(dict.fromkeys(o.tool for r in results for o in r.externals))
    rows = [row(f"internal: {internal_name}", "pool", [r.top(r.internal) or None for r in results])]
    for tool in external_names:
        rows.append(
            row(
                f"external: {tool}",
                "pool",
                [r.top(next((o for o in r.candidates if o.tool == tool), None)) or None for r in results],
            )
        )
    recorded = list(dict.fromkeys(s for r in results for s in r.systems))
    rows += [row(f"recorded: {s}", "recorded", [r.systems.get(s) for r in results]) for s in recorded]
    rows.append(row("agent", "agent", [r.prediction or None for r in results]))
    tops = [[r.top(r.internal) or None, *(r.top(o) or None for o in r.externals)] for r in results]
    rows.append(row("best-of-two (per-item oracle, no rewrite)", "oracle", oracle(tops)))
    rows.append(
        row(
            "oracle router (internal / external / rewrite)",
            "oracle",
            oracle([[*t, r.rewrite_candidate] for t, r in zip(tops, results)]),
        )
    )
    return rows


# ---------------------------------------------------------------------------------------- report


def build_report(
    results: Sequence[ItemResult],
    *,
    name: str = "eval",
    normalizer: NormalizerName = "english",
    unit: Unit = "word",
    rule: LabelRule | None = None,
    routing: RoutingAnalysis | None = None,
) -> EvalReport:
    """Aggregate ``results`` (in manifest order) into an :class:`EvalReport` (``routing``: an analysis
    already computed for the same results and rule, so it is not done twice)."""
    if not results:
        raise ValueError("no results to report")
    rule = rule or LabelRule(normalizer=normalizer, unit=unit)
    task = results[0].task
    rows_for = (lambda rs: _qa_rows(rs, rule)) if task == "qa" else (lambda rs: _asr_rows(rs, normalizer, unit))
    asr_systems = _asr_systems(results, normalizer, unit) if task == "asr" else []
    systems = _asr_rows(results, normalizer, unit, asr_systems) if task == "asr" else rows_for(results)
    datasets = list(dict.fromkeys(r.dataset for r in results))
    per_dataset = {d: rows_for([r for r in results if r.dataset == d]) for d in datasets} if len(datasets) > 1 else {}
    if routing is None:
        routing, _ = analyse_routing(results, rule)

    pool = [s for s in systems if s.kind == "pool"]
    agent = next(s for s in systems if s.kind == "agent")
    oracle_router = next(s for s in systems if s.name.startswith("oracle router"))
    best = relative = gap = None
    intervals: list[BootstrapInterval] = []
    if task == "qa":
        if pool:
            top = max(pool, key=lambda s: s.accuracy or 0.0)
            best = top.name
            gap = gap_closed(-(top.accuracy or 0.0), -(agent.accuracy or 0.0), -(oracle_router.accuracy or 0.0))
    elif pool:
        top = min(pool, key=lambda s: s.wer if s.wer is not None else float("inf"))
        best = top.name
        assert top.wer is not None and agent.wer is not None and oracle_router.wer is not None
        relative = 1 - agent.wer / top.wer if top.wer > 0 else None
        gap = gap_closed(top.wer, agent.wer, oracle_router.wer)
        intervals = _asr_intervals(results, asr_systems, top.name, normalizer, unit)
    actions: dict[str, int] = {}
    for r in results:
        key = r.action.value if r.action else ("failed" if r.error else "skipped")
        actions[key] = actions.get(key, 0) + 1
    return EvalReport(
        name=name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        task=task,
        items=len(results),
        failed_items=sum(1 for r in results if r.error),
        skipped_items=sum(1 for r in results if not r.error and r.action is None),
        normalizer=normalizer if task == "asr" else "basic (option matching)",
        unit=unit,
        label_rule=rule.describe(),
        systems=systems,
        per_dataset=per_dataset,
        best_single=best,
        relative_reduction=relative,
        gap_closed=gap,
        reduction_intervals=intervals,
        routing=routing,
        actions=actions,
        mean_rewrites=sum(r.rewrite_count for r in results) / len(results),
        seconds_per_item=sum(r.elapsed_s for r in results) / len(results),
        failures=[f"{r.id}: {r.error}" for r in results if r.error],
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _systems_table(rows: Sequence[SystemScore], task: str) -> list[str]:
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


def write_utterance_csv(
    results: Sequence[ItemResult],
    labels: Sequence[GoldLabel | None],
    path: Path,
    *,
    normalizer: NormalizerName,
    unit: Unit,
) -> None:
    fields = [
        "id",
        "dataset",
        "speaker",
        "category",
        "reference",
        "internal",
        "external_top1",
        "rewrite_candidate",
        "prediction",
        "action",
        "first_action",
        "gold_action",
        "p_internal",
        "p_external",
        "p_rewrite",
        "wer_internal",
        "wer_external_top1",
        "wer_rewrite",
        "wer_prediction",
        "error",
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r, label in zip(results, labels):
            ext = r.externals[0] if r.externals else None
            row = {
                "id": r.id,
                "dataset": r.dataset,
                "speaker": r.speaker,
                "category": r.category,
                "reference": r.reference if r.task == "asr" else r.answer,
                "internal": r.top(r.internal),
                "external_top1": r.top(ext),
                "rewrite_candidate": r.rewrite_candidate,
                "prediction": r.prediction,
                "action": r.action.value if r.action else "",
                "first_action": r.first_action.value if r.first_action else "",
                "gold_action": label.action.value if label else "",
                "error": r.error or "",
            }
            if r.probs:
                row.update({f"p_{a.value}": round(p, 4) for a, p in r.probs.items()})
            if r.task == "asr" and r.reference is not None:

                def w(text: str | None, reference: str = r.reference) -> str:
                    if text is None:
                        return ""
                    return f"{word_errors(reference, text, normalizer=normalizer, unit=unit).wer:.4f}"

                row.update(
                    {
                        "wer_internal": w(r.top(r.internal)),
                        "wer_external_top1": w(r.top(ext)),
                        "wer_rewrite": w(r.rewrite_candidate),
                        "wer_prediction": w(r.prediction),
                    }
                )
            writer.writerow(row)


def write_report(
    results: Sequence[ItemResult],
    out_dir: str | Path,
    *,
    name: str = "eval",
    normalizer: NormalizerName = "english",
    unit: Unit = "word",
    rule: LabelRule | None = None,
    plots: bool = True,
) -> EvalReport:
    """Write ``report.json``, ``report.md``, ``items.csv`` and the PNG plots into ``out_dir`` (the
    settings of the run that made the results, ``run.json`` in ``out_dir``, go into the report)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rule = rule or LabelRule(normalizer=normalizer, unit=unit)
    routing, labels = analyse_routing(results, rule)
    report = build_report(results, name=name, normalizer=normalizer, unit=unit, rule=rule, routing=routing)
    run_file = out / "run.json"
    if run_file.exists():
        report.run_settings = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
    written: list[str] = []
    if plots:
        from speech_hands.evals.plots import write_plots

        written = write_plots(report, out)
    (out / "report.json").write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report, written), encoding="utf-8")
    write_utterance_csv(results, labels, out / "items.csv", normalizer=normalizer, unit=unit)
    return report
