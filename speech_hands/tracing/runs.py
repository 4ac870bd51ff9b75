"""Every run in a trace database as one flat record (:class:`RunView`), joined with what an ``eval run``
report knows about it, and the filters the viewer and ``speech-hands threads`` / ``trace`` apply.

A trace alone knows the audio, the candidates, the decisions, the rewrites, the route and the
timings. References, gold actions and datasets exist only for runs made by ``eval run``: its folder
(``results.jsonl``, ``items.csv``, ``report.json``, next to ``traces.sqlite``) is read as plain files
and matched to the traces by thread id. The gold action comes from ``items.csv`` (the rule the report
used); without it, it is derived with the default rule (:mod:`speech_hands.metrics.labels`).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, ConfigDict, Field

from speech_hands.jsonl import read_appended
from speech_hands.metrics.labels import LabelRule, asr_gold_action, qa_gold_action
from speech_hands.metrics.qa import is_correct
from speech_hands.text import NormalizerName
from speech_hands.tracing.diff import WordDiff, word_diff
from speech_hands.tracing.trace import DecisionTrace, read_trace
from speech_hands.types import AgentResult

__all__ = [
    "LOW_CONFIDENCE",
    "ReportItem",
    "RunCatalog",
    "RunFilter",
    "RunView",
    "list_threads",
    "load_catalog",
    "load_report_items",
    "load_run",
    "run_view",
]

log = logging.getLogger(__name__)

#: A decision whose chosen action has a probability below this is "low confidence" by default.
LOW_CONFIDENCE = 0.6


class ReportItem(BaseModel):
    """The fields of one ``results.jsonl`` record the viewer uses (the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    task: str = "asr"
    dataset: str = "default"
    reference: str | None = None
    answer: str | None = None
    choices: list[str] = Field(default_factory=list)
    thread_id: str | None = None
    audio: str | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    rewrite_candidate: str | None = None
    error: str | None = None
    gold_action: str | None = Field(default=None, description="from items.csv, or derived")
    report: str | None = Field(default=None, description="the report folder it came from")
    normalizer: str = "english"


class HypothesisView(BaseModel):
    rank: int
    text: str
    score: float | None = None
    diff: WordDiff | None = None


class CandidateView(BaseModel):
    tool: str
    role: str
    kind: str
    hypotheses: list[HypothesisView] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0


class TaskView(BaseModel):
    """One node task of a step: its node, what it ran on (a tool, a draw), its latency, its error."""

    node: str
    label: str | None = None
    elapsed_s: float | None = None
    error: str | None = None


class StepView(BaseModel):
    step: int
    tasks: list[TaskView]


class RunView(BaseModel):
    """One run, flat: what the viewer shows and the filters test."""

    thread_id: str
    item_id: str
    created_at: str | None = None
    finished: bool
    task: str = "asr"
    dataset: str | None = None
    report: str | None = None
    audio_path: str | None = None
    duration_s: float | None = None
    question: str | None = None
    answer: str = ""
    action: str | None = Field(default=None, description="where the final answer came from")
    decision: str | None = Field(default=None, description="the first-token decision (round 0)")
    probs: dict[str, float] = Field(default_factory=dict, description="the three probabilities of that decision")
    confidence: float | None = Field(default=None, description="P(the decided action) of round 0")
    reference: str | None = Field(default=None, description="ASR: the reference; QA: the gold option")
    gold_action: str | None = None
    wrong: bool | None = Field(default=None, description="the answer is not the reference (None: unknown)")
    answer_diff: WordDiff | None = None
    diff_against: str | None = Field(default=None, description="'reference', 'internal' or None")
    candidates: list[CandidateView] = Field(default_factory=list)
    reflections: list[dict[str, Any]] = Field(default_factory=list)
    samples: list[dict[str, Any]] = Field(default_factory=list)
    votes: list[dict[str, Any]] = Field(default_factory=list)
    rewrites: list[dict[str, Any]] = Field(default_factory=list)
    steps: list[StepView] = Field(default_factory=list)
    node_seconds: dict[str, float] = Field(default_factory=dict, description="total latency per node")
    path_edges: list[tuple[str, str, int]] = Field(default_factory=list, description="graph edges taken, with counts")
    failed_tools: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    skipped_reason: str | None = None

    @property
    def mismatch(self) -> bool:
        """The first-token decision differs from the gold action (False when either is unknown)."""
        return self.gold_action is not None and self.decision is not None and self.gold_action != self.decision


class RunFilter(BaseModel):
    """What ``threads`` / ``trace`` and the viewer's filter bar select (every given condition must hold)."""

    action: str | None = Field(default=None, description="the final action: internal, external, rewrite or skipped")
    dataset: str | None = None
    wrong: bool = Field(default=False, description="only runs whose answer is not the reference")
    mismatch: bool = Field(default=False, description="only runs whose decision differs from the gold action")
    low_confidence: float | None = Field(default=None, description="only runs with P(decided action) below this")

    @property
    def active(self) -> bool:
        return bool(self.action or self.dataset or self.wrong or self.mismatch or self.low_confidence is not None)

    def matches(self, run: RunView) -> bool:
        if self.action is not None and (run.action or "skipped") != self.action:
            return False
        if self.dataset is not None and run.dataset != self.dataset:
            return False
        if self.wrong and run.wrong is not True:
            return False
        if self.mismatch and not run.mismatch:
            return False
        return not (
            self.low_confidence is not None and (run.confidence is None or run.confidence >= self.low_confidence)
        )


class RunCatalog(BaseModel):
    """Every run found, newest first, and where it came from."""

    trace_db: str
    reports: list[str] = Field(default_factory=list)
    runs: list[RunView]
    graph_nodes: list[str] = Field(default_factory=list)
    graph_edges: list[tuple[str, str, bool]] = Field(default_factory=list, description="source, target, conditional")

    def select(self, run_filter: RunFilter) -> list[RunView]:
        return [r for r in self.runs if run_filter.matches(r)]

    def get(self, thread_id: str) -> RunView | None:
        return next((r for r in self.runs if r.thread_id == thread_id), None)


# ------------------------------------------------------------------------------------ eval reports


def _gold_from_csv(folder: Path) -> dict[str, str]:
    path = folder / "items.csv"
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["id"]: row["gold_action"] for row in csv.DictReader(fh) if row.get("gold_action")}


def _derived_gold(item: ReportItem, rule: LabelRule) -> str | None:
    """The gold action from the stored candidates with ``rule`` (what ``evals.routing.gold_label`` does)."""
    if item.error or not item.candidates:
        return None
    ok = [c for c in item.candidates if not c.get("error") and c.get("hypotheses")]
    internal = next((c["hypotheses"][0]["text"] for c in ok if c.get("role") == "internal"), None)
    externals = {c["tool"]: [h["text"] for h in c["hypotheses"]] for c in ok if c.get("role") == "external"}
    try:
        if item.task == "qa":
            if item.answer is None:
                return None
            return qa_gold_action(item.answer, item.choices, internal, externals, rule).action.value
        if item.reference is None:
            return None
        return asr_gold_action(item.reference, internal, externals, item.rewrite_candidate, rule).action.value
    except ValueError:
        return None


def load_report_items(folder: str | Path) -> list[ReportItem]:
    """The items of one ``eval run`` folder (its ``results.jsonl``), with their gold actions."""
    folder = Path(folder)
    results = folder / "results.jsonl"
    if not results.exists():
        from speech_hands.errors import SpeechHandsError

        raise SpeechHandsError(f"no results.jsonl in {folder}; give an `eval run` output folder as --report")
    normalizer = "english"
    report_json = folder / "report.json"
    if report_json.exists():
        normalizer = json.loads(report_json.read_text(encoding="utf-8")).get("normalizer", normalizer)
    gold = _gold_from_csv(folder)
    rule = LabelRule(normalizer=normalizer) if normalizer in ("english", "basic", "none") else LabelRule()
    items = []
    for item in read_appended(results, ReportItem):
        label = gold.get(item.id) if gold else _derived_gold(item, rule)
        items.append(item.model_copy(update={"gold_action": label, "report": str(folder), "normalizer": normalizer}))
    return items


# ------------------------------------------------------------------------------------------ traces


def list_threads(graph: CompiledStateGraph, limit: int | None = None) -> list[str]:
    """Thread ids in the checkpointer, the most recently written first."""
    from speech_hands.checkpointing import thread_ids

    return thread_ids(graph.checkpointer, limit)  # type: ignore[arg-type]


def _timing(update: Any) -> float | None:
    if isinstance(update, dict):
        for t in update.get("timings") or []:
            if isinstance(t, dict) and isinstance(t.get("elapsed_s"), (int, float)):
                return float(t["elapsed_s"])
    return None


def _label(node: str, update: Any) -> str | None:
    """What a task ran on: the tool of a perception branch, the draw of a reflection."""
    if not isinstance(update, dict):
        return None
    if node == "perceive" and update.get("outputs"):
        return str(update["outputs"][0].get("tool"))
    if node == "reflect" and update.get("samples"):
        draw = update["samples"][0]
        return f"draw {draw.get('sample_index', 0)}: {draw.get('raw_token')}"
    if node == "vote" and update.get("route"):
        return f"-> {update['route']}"
    if node == "rewrite" and update.get("rewrites"):
        return f"#{update['rewrites'][0].get('round')}"
    return None


def _steps(trace: DecisionTrace) -> list[StepView]:
    return [
        StepView(
            step=step.step,
            tasks=[
                TaskView(
                    node=w["node"],
                    label=_label(w["node"], w.get("update")),
                    elapsed_s=_timing(w.get("update")),
                    error=w.get("error"),
                )
                for w in step.writes
            ],
        )
        for step in trace.steps
    ]


def _path_edges(steps: Sequence[StepView], edges: set[tuple[str, str]], finished: bool) -> list[tuple[str, str, int]]:
    """The graph edges the run followed: between nodes of consecutive steps that an edge joins."""
    counts: dict[tuple[str, str], int] = {}
    nodes_per_step = [[t.node for t in s.tasks] for s in steps]
    if nodes_per_step:
        nodes_per_step = [["__start__"], *nodes_per_step] + ([["__end__"]] if finished else [])
    for before, after in itertools.pairwise(nodes_per_step):
        for target in dict.fromkeys(after):
            sources = [s for s in dict.fromkeys(before) if (s, target) in edges]
            for source in sources:  # parallel branches count once each (2 perceive -> gather: 2)
                n = max(before.count(source), after.count(target))
                counts[(source, target)] = counts.get((source, target), 0) + n
    return [(s, t, n) for (s, t), n in counts.items()]


def _candidates(
    result: AgentResult, against: str | None, normalizer: NormalizerName, diff: bool
) -> list[CandidateView]:
    views = []
    ordered = sorted(result.candidates, key=lambda o: o.role != "internal")  # internal first, then tool order
    for output in ordered:
        views.append(
            CandidateView(
                tool=output.tool,
                role=output.role,
                kind=output.kind,
                hypotheses=[
                    HypothesisView(
                        rank=h.rank,
                        text=h.text,
                        score=h.score,
                        diff=word_diff(against, h.text, normalizer=normalizer)
                        if diff and against is not None
                        else None,
                    )
                    for h in output.hypotheses
                ],
                rejected=[h.text for h in output.rejected],
                error=f"{output.error.type}: {output.error.message}" if output.error else None,
                elapsed_s=output.elapsed_s,
            )
        )
    return views


def run_view(
    trace: DecisionTrace,
    item: ReportItem | None = None,
    *,
    edges: Iterable[tuple[str, str]] = (),
) -> RunView:
    """One trace (and its eval item, when known) as a :class:`RunView`; ``edges``: the graph's edges,
    to tell which ones the run followed."""
    result = trace.result
    steps = _steps(trace)
    node_seconds: dict[str, float] = {}
    for step in steps:
        for task in step.tasks:
            node_seconds[task.node] = node_seconds.get(task.node, 0.0) + (task.elapsed_s or 0.0)
    view = RunView(
        thread_id=trace.thread_id,
        item_id=item.id if item else (result.audio.id if result else trace.thread_id),
        created_at=trace.steps[0].created_at if trace.steps else None,
        finished=result is not None,
        steps=steps,
        node_seconds=node_seconds,
        path_edges=_path_edges(steps, set(edges), result is not None),
    )
    if item is not None:
        view.task, view.dataset, view.report, view.gold_action = item.task, item.dataset, item.report, item.gold_action
        view.reference = item.reference if item.task == "asr" else item.answer
        view.audio_path = item.audio
    if result is None:
        view.notes = [f"{step.tasks[-1].node}: {step.tasks[-1].error}" for step in steps if step.tasks[-1].error]
        return view
    normalizer: NormalizerName = (item.normalizer if item else "english") or "english"  # type: ignore[assignment]
    view.audio_path = view.audio_path or result.audio.path
    view.duration_s = result.audio.duration_s or None
    view.question = result.question
    view.answer = result.answer
    view.action = result.action.value if result.action else None
    view.skipped_reason = result.skipped_reason
    if result.reflection is not None:
        view.decision = result.reflection.action.value
        view.probs = {a.value: p for a, p in result.reflection.probs.items()}
        view.confidence = result.reflection.probs.get(result.reflection.action)
    internal = result.internal.top.text if result.internal is not None and result.internal.top is not None else None
    asr = view.task == "asr"
    if view.reference is not None:
        against, view.diff_against = view.reference, "reference"
        if asr:
            view.answer_diff = word_diff(view.reference, result.answer, normalizer=normalizer)
            view.wrong = view.answer_diff.errors > 0
        else:
            try:
                view.wrong = not is_correct(result.answer, view.reference, item.choices if item else ())
            except ValueError:
                view.wrong = None
    else:
        against, view.diff_against = internal, ("internal" if internal is not None else None)
    view.candidates = _candidates(result, against, normalizer, diff=asr)
    view.reflections = [r.model_dump(mode="json") for r in result.reflections]
    view.samples = [r.model_dump(mode="json") for r in result.samples]
    view.votes = _votes(trace)
    view.rewrites = [
        {
            **rw.model_dump(mode="json"),
            "diff": word_diff(against, rw.text, normalizer=normalizer).model_dump() if asr and against else None,
        }
        for rw in result.rewrites
    ]
    view.failed_tools = [o.tool for o in result.failed_tools]
    view.notes = list(result.notes)
    return view


def _votes(trace: DecisionTrace) -> list[dict[str, Any]]:
    """The majority-vote tallies (k > 1), round by round, from the ``vote`` writes."""
    votes = []
    for step in trace.steps:
        for write in step.writes:
            update = write.get("update")
            if write["node"] == "vote" and isinstance(update, dict):
                votes.extend(v for v in update.get("votes") or [] if isinstance(v, dict))
    return votes


def load_catalog(
    graph: CompiledStateGraph,
    *,
    trace_db: str,
    reports: Sequence[str | Path] = (),
    limit: int | None = None,
) -> RunCatalog:
    """Every run of the checkpointer behind ``graph`` (newest first, at most ``limit``), joined with
    the items of the ``eval run`` folders in ``reports``."""
    items: dict[str, ReportItem] = {}
    for folder in reports:
        for item in load_report_items(folder):
            if item.thread_id:
                items[item.thread_id] = item
    shape = graph.get_graph()
    edges = [(e.source, e.target, bool(e.conditional)) for e in shape.edges]
    edge_set = {(s, t) for s, t, _ in edges}
    runs = []
    for thread_id in list_threads(graph, limit):
        try:
            trace = read_trace(graph, thread_id)
        except Exception as exc:  # a thread this graph cannot read (another graph's checkpoints)
            log.warning("skipped thread %s: %s", thread_id, exc)
            continue
        runs.append(run_view(trace, items.get(thread_id), edges=edge_set))
    from speech_hands.checkpointing import redact

    return RunCatalog(
        trace_db=redact(trace_db),  # the page shows it: never a password
        reports=[str(r) for r in reports],
        runs=runs,
        graph_nodes=list(shape.nodes),
        graph_edges=edges,
    )


def load_run(graph: CompiledStateGraph, thread_id: str, *, reports: Sequence[str | Path] = ()) -> RunView:
    """One thread's run as a :class:`RunView` (joined with its eval item when a report has it)."""
    item = None
    for folder in reports:
        item = next((i for i in load_report_items(folder) if i.thread_id == thread_id), item)
    edges = {(e.source, e.target) for e in graph.get_graph().edges}
    return run_view(read_trace(graph, thread_id), item, edges=edges)
