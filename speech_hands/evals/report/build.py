"""Building an :class:`~speech_hands.evals.report.model.EvalReport` from item results: the numbers
of a report. Every number says which normaliser and label rule produced it.

ASR systems compared (see :mod:`speech_hands.evals.routing` for the oracle definitions): the
internal top-1, every external tool's top-1, every recorded system in the manifest, the agent,
best-of-two, the oracle router and the oracle over all N-best candidates. AudioQA: accuracy of the
same rows, per category (DCASE 2025 style), with unparseable predictions counted.

Pure computation (no files, no rendering), so a report can be rebuilt from stored results with
another normaliser or label rule and compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from speech_hands.evals.report.model import EvalReport, SystemScore
from speech_hands.evals.routing import RoutingAnalysis, analyse_routing, gap_closed
from speech_hands.evals.runner import ItemResult
from speech_hands.metrics.labels import LabelRule
from speech_hands.metrics.qa import accuracy_by_category, is_correct, resolve_choice
from speech_hands.metrics.significance import BootstrapInterval, reduction_intervals
from speech_hands.metrics.wer import ErrorCounts, Unit, sum_counts, word_errors
from speech_hands.text import NormalizerName

__all__ = ["build_report"]


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
