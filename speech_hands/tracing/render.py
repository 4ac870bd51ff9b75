"""Rich renderings of a result and of a decision trace (terminal output only)."""

from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from speech_hands.tracing.diff import WordDiff
from speech_hands.tracing.runs import RunView
from speech_hands.tracing.trace import DecisionTrace
from speech_hands.types import Action, AgentResult, Reflection

_ACTION_STYLE = {Action.INTERNAL: "green", Action.EXTERNAL: "cyan", Action.REWRITE: "magenta"}


def _probs_table(reflection: Reflection, title: str) -> Table:
    table = Table(title=title, show_header=True, expand=False)
    table.add_column("action")
    table.add_column("probability", justify="right")
    table.add_column("")
    for action, p in reflection.probs.items():
        mark = "<- chosen" if action is reflection.action else ""
        bar = "#" * round(p * 30)
        table.add_row(Text(action.token, style=_ACTION_STYLE[action]), f"{p:.3f}", f"{bar} {mark}")
    return table


def candidates_table(result: AgentResult, limit: int = 3) -> Table:
    table = Table(title="Candidates", show_lines=False)
    for column in ("tool", "role", "rank", "text", "score"):
        table.add_column(column, overflow="fold")
    for output in result.candidates:
        if output.error is not None:
            table.add_row(
                output.tool, output.role, "-", f"[red]failed: {output.error.type}: {output.error.message}[/red]", ""
            )
            continue
        for hyp in output.hypotheses[:limit]:
            score = f"{hyp.score:.3f}" if hyp.score is not None else ""
            table.add_row(output.tool, output.role, str(hyp.rank), escape(hyp.text), score)
    return table


def segments_table(result: AgentResult) -> Table:
    """Long audio routed segment by segment: every segment's span, action, P(action) and text."""
    table = Table(title=f"Segments ({len(result.segments)})", show_lines=False)
    for column in ("#", "start", "end", "action", "P", "text"):
        table.add_column(column, overflow="fold", justify="right" if column in ("#", "start", "end", "P") else "left")
    for segment in result.segments:
        if segment.action is None:
            action, p = Text(f"skipped: {segment.skipped_reason}", style="yellow"), "-"
        else:
            action = Text(segment.action.token, style=_ACTION_STYLE[segment.action])
            p = f"{segment.probs[segment.action]:.2f}" if segment.probs else "-"
        table.add_row(str(segment.index), f"{segment.start:.2f}", f"{segment.end:.2f}", action, p, Text(segment.text))
    return table


def render_result(result: AgentResult, console: Console, *, reference: str | None = None) -> None:
    """Answer, action and its probabilities, the candidates, rewrites, notes and timings."""
    if result.action is None:
        headline = Text(f"skipped: {result.skipped_reason}", style="yellow")
    else:
        headline = Text.assemble(("action ", "bold"), (result.action.token, _ACTION_STYLE[result.action]))
    body: list = [headline, Text.assemble(("answer    ", "bold"), result.answer or "(empty)")]  # Text: no markup
    if reference is not None:
        body.append(Text.assemble(("reference ", "bold"), reference))
    console.print(Panel(Group(*body), title="Speech-Hands", expand=False))
    if len(result.segments) > 1:
        console.print(segments_table(result))
    console.print(candidates_table(result))
    for _i, reflection in enumerate(result.reflections):
        title = f"Reflection round {reflection.round} ({reflection.policy})"
        console.print(_probs_table(reflection, title))
        if reflection.rationale:
            console.print(f"  [dim]{escape(reflection.rationale)}[/dim]")
    for rewrite in result.rewrites:
        conf = f" (confidence {rewrite.confidence:.2f})" if rewrite.confidence is not None else ""
        console.print(
            f"[magenta]rewrite #{rewrite.round}[/magenta] via {rewrite.strategy}{conf}: {escape(rewrite.text)}"
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    timing = ", ".join(f"{node} {result.timing(node):.2f}s" for node in dict.fromkeys(t.node for t in result.timings))
    console.print(f"[dim]timings: {timing}[/dim]")
    console.print(f"[dim]thread {result.thread_id}  (speech-hands trace {result.thread_id})[/dim]")


def _summarise(node: str, update: dict | None) -> str:
    if not isinstance(update, dict):
        return ""
    if node == "perceive":
        out = (update.get("outputs") or [{}])[0]
        if out.get("error"):
            return f"{out.get('tool')}: FAILED {out['error'].get('type')}: {out['error'].get('message')}"
        hyps = out.get("hypotheses") or []
        top = hyps[0]["text"] if hyps else "(nothing)"
        return (
            f"{out.get('tool')} ({out.get('role')}): {len(hyps)} hyp(s), top: {top!r}, {out.get('elapsed_s', 0):.2f}s"
        )
    if node == "reflect":
        draw = (update.get("samples") or [{}])[0]
        probs = ", ".join(f"{k}={v:.2f}" for k, v in (draw.get("probs") or {}).items())
        return f"draw {draw.get('sample_index')}: {draw.get('raw_token')} [{probs}]"
    if node == "vote":
        action = update.get("action")
        votes = update.get("votes")
        route = f" -> {update['route']}" if update.get("route") else ""  # traces from before `route` lack it
        if votes:
            tally = {g["key"]: round(g["weight"], 3) for g in votes[0].get("groups", [])}
            return f"decision: <{action}> by majority vote {tally}{route}"
        return f"decision: <{action}>{route}"
    if node == "rewrite":
        rw = (update.get("rewrites") or [{}])[0]
        return f"rewrite #{rw.get('round')} ({rw.get('strategy')}): {rw.get('text')!r}"
    if node in ("use_internal", "use_external"):
        return f"answer: {update.get('answer')!r} (action <{update.get('action')}>)"
    if node in ("gather", "prepare", "finish") and update.get("skipped_reason"):
        return f"skipped: {update['skipped_reason']}"
    if node == "segment":
        return f"{len(update.get('segments') or [])} segment(s)"
    if node == "route_segment":
        seg = (update.get("results") or [{}])[0]
        what = f"<{seg['action']}>" if seg.get("action") else f"skipped: {seg.get('skipped_reason')}"
        return f"segment {seg.get('index')} ({seg.get('start', 0):.2f}-{seg.get('end', 0):.2f} s): {what} {seg.get('text')!r}"
    if node == "stitch":
        return f"answer: {len(update.get('answer') or '')} characters (action <{update.get('action')}>)"
    return ""


def render_trace(trace: DecisionTrace, console: Console) -> None:
    """The route step by step, then the final result."""
    table = Table(title=f"Trace of thread {trace.thread_id}")
    table.add_column("step", justify="right")
    table.add_column("node")
    table.add_column("what happened", overflow="fold")
    for step in trace.steps:
        for write in step.writes:
            summary = escape(_summarise(write["node"], write.get("update")))
            if write.get("error"):
                summary = f"[red]{escape(write['error'])}[/red]"
            table.add_row(str(step.step), write["node"], summary)
    console.print(table)
    if trace.segments:
        routes = Table(title="Route of every segment (speech-hands trace --json: every step)")
        for column in ("#", "span (s)", "action", "route"):
            routes.add_column(column, overflow="fold")
        for seg in trace.segments:
            action = Text(seg.action.token, style=_ACTION_STYLE[seg.action]) if seg.action else Text("skipped")
            routes.add_row(str(seg.index), f"{seg.start:.2f}-{seg.end:.2f}", action, " > ".join(seg.route))
        console.print(routes)
    if trace.turns:
        turns = Table(title=f"Conversation ({len(trace.turns)} turns; the steps above route turn {trace.turn})")
        for column in ("turn", "heard", "action", "reply", "route"):
            turns.add_column(column, overflow="fold")
        for t in trace.turns:
            action = Text(t.action.token, style=_ACTION_STYLE[t.action]) if t.action else Text("skipped")
            heard = f"Q: {t.question}\nA: {t.transcript}" if t.question else t.transcript
            turns.add_row(str(t.index), escape(heard), action, escape(t.reply or "-"), " > ".join(t.route))
        console.print(turns)
    if trace.result is not None:
        render_result(trace.result, console)
    else:
        console.print("[yellow]this run did not finish[/yellow]")


def diff_text(diff: WordDiff | None, fallback: str = "") -> Text:
    """A word diff as styled text: deleted reference words struck out in red, inserted or substituted
    candidate words in green (the brackets keep it readable without colour)."""
    if diff is None:
        return Text(fallback)
    out = Text()
    for i, op in enumerate(diff.ops):
        if i:
            out.append(" ")
        ref, hyp = " ".join(op.ref), " ".join(op.hyp)
        if op.op == "equal":
            out.append(ref)
        elif op.op == "substitute":
            out.append(f"[-{ref}-]", style="red strike")
            out.append(f"{{+{hyp}+}}", style="bold green")
        elif op.op == "delete":
            out.append(f"[-{ref}-]", style="red strike")
        else:
            out.append(f"{{+{hyp}+}}", style="bold green")
    return out if diff.ops else Text("(empty)", style="dim")


def render_diff(run: RunView, console: Console) -> None:
    """Every candidate's word-level diff against the reference (or, with none known, the internal prediction)."""
    if run.diff_against is None:
        console.print("[yellow]no reference and no internal prediction to diff against[/yellow]")
        return
    against = "the reference" if run.diff_against == "reference" else "the internal prediction (no reference known)"
    table = Table(title=f"Word diff against {against}  ([-deleted-] {{+inserted+}})")
    for column in ("tool", "rank", "errors", "diff"):
        table.add_column(column, overflow="fold")
    if run.reference is not None:
        table.add_row("reference", "", "", Text(run.reference, style="dim"))
    for output in run.candidates:
        if output.error is not None:
            table.add_row(output.tool, "-", "", Text(f"failed: {output.error}", style="red"))
        for hyp in output.hypotheses:
            errors = f"{hyp.diff.errors} ({100 * hyp.diff.wer:.1f}%)" if hyp.diff else ""
            table.add_row(output.tool, str(hyp.rank), errors, diff_text(hyp.diff, hyp.text))
    for rewrite in run.rewrites:
        diff = WordDiff.model_validate(rewrite["diff"]) if rewrite.get("diff") else None
        errors = f"{diff.errors} ({100 * diff.wer:.1f}%)" if diff else ""
        table.add_row(f"rewrite #{rewrite['round']}", "", errors, diff_text(diff, rewrite["text"]))
    if run.answer_diff is not None:
        d = run.answer_diff
        table.add_row("answer", "", f"{d.errors} ({100 * d.wer:.1f}%)", diff_text(d, run.answer), style="bold")
    console.print(table)


def runs_table(runs: list[RunView], title: str) -> Table:
    """One row per run: thread, item (and dataset when several), final action (and the first decision
    when it differs), P(decision), then, when some run has them, the gold action, the WER (right /
    wrong for audio QA) and the failed tools."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("thread", no_wrap=True)  # whole, to copy into `speech-hands trace`
    datasets = len({r.dataset for r in runs}) > 1
    rows: list[dict[str, Text | str]] = []
    for run in runs:
        item = Text(run.item_id)
        if datasets and run.dataset:
            item.append(f" ({run.dataset})", style="dim")
        action = Text(run.action or "skipped", style=_ACTION_STYLE.get(Action(run.action)) if run.action else "yellow")
        if run.decision and run.decision != run.action:
            action.append(f" (first {run.decision})", style="dim")
        wer = f"{100 * run.answer_diff.wer:.1f}%" if run.answer_diff else ""
        if not wer and run.wrong is not None:
            wer = "wrong" if run.wrong else "right"
        rows.append(
            {
                "thread": run.thread_id,
                "item": item,
                "action": action,
                "P": f"{run.confidence:.2f}" if run.confidence is not None else "",
                "gold": Text(run.gold_action or "", style="red" if run.mismatch else ""),
                "WER": wer,
                "failed": ", ".join(run.failed_tools),
            }
        )
    columns = ["item", "action", "P"] + [c for c in ("gold", "WER", "failed") if any(str(r[c]) for r in rows)]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["thread"], *(row[c] for c in columns))
    return table
