"""Long audio, routed segment by segment: the routing graph run once per segment (the figure)::

    START --> segment         (voice-activity segments of at most max_segment_s that tile the input)
                 |
                 | Send: one branch per segment, at most segment_concurrency running at a time
                 v
      +--> route_segment      (the routing graph of speech_hands.graphs.routing on that segment, run
      |          |             as a subgraph: its own perception by every tool, reflection, rewrite;
      |          |             checkpointed in the thread under the segment's namespace)
      |          v
      |       review          (a segment whose answer misses words another tool heard is cut in two)
      |          |
      +--Send: one branch per new half
                 |
                 +--(nothing left to route)--> stitch  (the segments' texts joined in order) --> END

Speech recognition input longer than one Whisper window (:data:`speech_hands.audio.SEGMENTED_OVER_S`)
goes through this graph instead of the routing graph directly; shorter input, audio QA and replay
are routed whole, as before. Each segment is an :class:`~speech_hands.types.AudioRef` with offsets
into the whole input (:func:`speech_hands.audio.audio_segment`), so raw audio never enters the state
and every model sees at most one window: the learned reflector scores every segment's candidates
(it needs one 30 s window of encoder states), and memory stays flat in the duration, because only
``segment_concurrency`` segments are decoded at a time. Each segment's result is written as its
branch finishes (LangGraph keeps the writes of finished branches), so ``stream`` reports segments as
they come and a trace shows every segment's route.

Why ``review``: without timestamps, Whisper sometimes leaves out a whole sentence of a segment that
holds two (seen on real speech: Whisper base's five candidates all lacked the first of two
sentences, Whisper tiny.en's all had it, and the reflector kept base's). When some tool's top-1 holds
at least :data:`LOST_WORDS` (and 30 %) more words than a segment's answer, or when the answer has
fewer than ``min_words_per_speech_s`` (:data:`SPARSE_WORDS_PER_S`) words per second of detected speech
over at least :data:`SPARSE_MIN_SPEECH_S` of it (every tool can drop the same sentence), the segment
is cut at its longest pause and both halves are routed again, down to halves of :data:`MIN_PART_S`, at most
:data:`MAX_SPLITS` times in a row; a note says so. The answer then comes from the halves.

How a segment's routing run is found again: ``route_segment`` records the namespace its run was
checkpointed under (``Segment.checkpoint_ns``); the routing graph reads that history back with the
thread id and that namespace (:mod:`speech_hands.tracing.trace`).

The stitched answer joins the segments' texts in order. The whole input's ``action`` is the action
of most of its answered audio (seconds, ties in the paper's order: internal, external, rewrite); each
segment keeps its own. The per-tool candidates of the whole input join each tool's top-1 of every
segment (its N-best lists stay with the segments). Notes are prefixed with their segment's span.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send
from typing_extensions import NotRequired, TypedDict  # pydantic needs it on Python < 3.12 (JSON schemas)

from speech_hands.audio import SAMPLE_RATE, SEGMENT_S, AudioInput, AudioStore, audio_segment, speech_seconds
from speech_hands.backends.windows import speech_segments, split_in_two
from speech_hands.graphs.routing import _timed
from speech_hands.graphs.state import extend, fresh_input, segment_from_state
from speech_hands.metrics.wer import normalize_for
from speech_hands.reflection.decision import ACTIONS
from speech_hands.types import (
    Action,
    AgentResult,
    AudioRef,
    Hypothesis,
    NodeTiming,
    Segment,
    ToolError,
    ToolOutput,
)

log = logging.getLogger(__name__)

__all__ = [
    "SegmentSettings",
    "SegmentedGraph",
    "SegmentedState",
    "is_segmented_thread",
    "segmented_result_from_state",
    "segmented_shape",
]


#: A segment is cut in two when some tool's top-1 has this many more words than its answer (and 30 %).
LOST_WORDS = 6
LOST_SHARE = 0.3
#: Halves are at least this long (seconds), and a segment is cut at most this many times in a row.
MIN_PART_S = 2.0
MAX_SPLITS = 2
#: A segment is also cut in two when its answer has fewer words than this per second of detected speech,
#: over at least SPARSE_MIN_SPEECH_S of speech: every tool can drop the same sentence, and then no tool
#: hears more (seen on real speech: a segment holding the end of one speaker's utterance and the start of
#: another's, answered with 18 words for 18.3 s of speech by both Whisper models). Read speech runs at
#: 2-3 words per second: of the 60 dev utterances, the slowest with 6 s of speech or more has 1.65; of the
#: 241 segments of the 60-minute benchmark input, only the two that had lost a sentence fell below 1.2.
SPARSE_WORDS_PER_S = 1.2
SPARSE_MIN_SPEECH_S = 8.0


class SegmentedState(TypedDict, total=False):
    audio: dict[str, Any]  # AudioRef of the whole input
    question: str | None
    prompt: str | None  # text said before the input: every segment's ASR prompt
    # the plan: {"index", "audio": the segment's AudioRef, "depth": times cut}; review appends halves
    segments: Annotated[list[dict[str, Any]], extend]
    replaced: Annotated[list[int], extend]  # segments cut in two after routing (their halves answer)
    reviewed: Annotated[list[int], extend]  # segments review has looked at
    results: Annotated[list[dict[str, Any]], extend]  # Segment, one per routed segment, as each finishes
    timings: Annotated[list[dict[str, Any]], extend]  # NodeTiming of this graph's own nodes
    notes: Annotated[list[str], extend]
    answer: str | None
    action: str | None
    skipped_reason: str | None


class SegmentTask(TypedDict):
    """The payload ``Send`` hands to one segment's branch."""

    index: int
    audio: dict[str, Any]
    prompt: NotRequired[str | None]


#: Every node with the input it receives.
NODE_INPUTS: dict[str, type] = {
    "segment": SegmentedState,
    "route_segment": SegmentTask,
    "review": SegmentedState,
    "stitch": SegmentedState,
}
EDGES: tuple[tuple[str, str], ...] = ((START, "segment"), ("route_segment", "review"), ("stitch", END))
BRANCHES: dict[str, tuple[str, ...]] = {"segment": ("route_segment", "stitch"), "review": ("route_segment", "stitch")}


@dataclass(frozen=True)
class SegmentSettings:
    """Knobs of the segmenting graph (see :class:`speech_hands.config.AgentConfig` for the docs)."""

    max_segment_s: float = SEGMENT_S
    segment_concurrency: int = 1
    min_words_per_speech_s: float = SPARSE_WORDS_PER_S


def fresh_segmented_input(audio: dict[str, Any], prompt: str | None = None) -> SegmentedState:
    """The input of one run over a long input: its reference and ASR prompt, every list reset."""
    return SegmentedState(
        audio=audio,
        question=None,
        prompt=prompt,
        segments=None,  # type: ignore[typeddict-item]
        replaced=None,  # type: ignore[typeddict-item]
        reviewed=None,  # type: ignore[typeddict-item]
        results=None,  # type: ignore[typeddict-item]
        timings=None,  # type: ignore[typeddict-item]
        notes=None,  # type: ignore[typeddict-item]
        answer=None,
        action=None,
        skipped_reason=None,
    )


def _assemble(nodes: dict[str, Callable[..., Any]], branches: dict[str, Callable[..., Any]]) -> StateGraph:
    graph = StateGraph(SegmentedState)
    for name, input_schema in NODE_INPUTS.items():
        graph.add_node(name, _timed(name, nodes[name]), input_schema=input_schema)
    for source, target in EDGES:
        graph.add_edge(source, target)
    for source, targets in BRANCHES.items():
        graph.add_conditional_edges(source, branches[source], list(targets))
    return graph


def segmented_shape() -> StateGraph:
    """The segmenting graph's nodes and edges with no backends: to read traces back. Running it raises."""

    def unbacked(name: str) -> Callable[..., Any]:
        def run(*_: Any, **__: Any) -> Any:
            raise RuntimeError(f"{name!r} has no backend in segmented_shape(); build a SegmentedGraph to run it")

        return run

    return _assemble({name: unbacked(name) for name in NODE_INPUTS}, {name: unbacked(name) for name in BRANCHES})


def is_segmented_thread(checkpointer: BaseCheckpointSaver, thread_id: str) -> bool:
    """Whether the latest run on ``thread_id`` went through the segmenting graph (its state has a plan)."""
    latest = checkpointer.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    return latest is not None and "segments" in (latest.checkpoint.get("channel_values") or {})


class SegmentedGraph:
    """Builds the segmenting graph over a compiled routing graph (run once per segment as a subgraph)."""

    def __init__(
        self,
        routing: CompiledStateGraph,
        store: AudioStore,
        settings: SegmentSettings | None = None,
        *,
        inner_concurrency: int = 8,
    ) -> None:
        self.routing = routing
        self.store = store
        self.settings = settings or SegmentSettings()
        # the routing run inside a branch gets its own bound: the outer one (segment_concurrency) must not
        # serialise its parallel perception
        self.inner_concurrency = inner_concurrency

    # ----------------------------------------------------------------- nodes

    def segment(self, state: SegmentedState) -> dict[str, Any]:
        audio = self.store.get(AudioRef.model_validate(state["audio"]))
        spans = speech_segments(audio.require_samples(), max_s=self.settings.max_segment_s)
        return {"segments": [_planned(audio, start, end, i, 0) for i, (start, end) in enumerate(spans)]}

    def route_segment(self, task: SegmentTask, config: RunnableConfig) -> dict[str, Any]:
        namespace = (config.get("configurable") or {}).get("checkpoint_ns")
        try:
            inputs = fresh_input(task["audio"], None, task.get("prompt"))
            values = self.routing.invoke(inputs, {"max_concurrency": self.inner_concurrency})
            segment = segment_from_state(values, index=task["index"], checkpoint_ns=namespace)
        except GraphBubbleUp:
            raise
        except Exception as exc:  # one segment that cannot be routed never costs the others
            ref = AudioRef.model_validate(task["audio"])
            why = f"routing failed ({type(exc).__name__}: {exc or repr(exc)})"
            log.warning("segment %d: %s", task["index"], why, exc_info=exc)
            segment = Segment(
                index=task["index"],
                start=round(ref.start_s or 0.0, 3),
                end=round(ref.end_s or 0.0, 3),
                text="",
                action=None,
                skipped_reason=why,
                notes=[why],
                checkpoint_ns=namespace,
            )
        return {"results": [segment.model_dump(mode="json")]}

    def review(self, state: SegmentedState) -> dict[str, Any]:
        """Cut in two every newly routed segment whose answer misses words another tool heard, or has too
        few words for the speech in it."""
        plan = {p["index"]: p for p in state.get("segments") or []}
        seen = set(state.get("reviewed") or [])
        fresh = [s for s in _segments(state, final=False) if s.index not in seen]
        audio: AudioInput | None = None
        new, replaced, notes = [], [], []
        next_index = max(plan) + 1
        for seg in fresh:
            if (missed := missed_words(seg)) is None:
                audio = audio or self.store.get(AudioRef.model_validate(state["audio"]))
                if (missed := sparse_words(seg, audio, self.settings.min_words_per_speech_s)) is None:
                    continue
            where = f"the segment at {seg.start:.1f}-{seg.end:.1f} s"
            if plan[seg.index].get("depth", 0) >= MAX_SPLITS:
                notes.append(f"{where}: {missed}; not cut again (cut {MAX_SPLITS} times already)")
                continue
            audio = audio or self.store.get(AudioRef.model_validate(state["audio"]))
            ref = AudioRef.model_validate(plan[seg.index]["audio"])
            start, end = round((ref.start_s or 0.0) * SAMPLE_RATE), round((ref.end_s or 0.0) * SAMPLE_RATE)
            cut = split_in_two(audio.require_samples()[start:end], MIN_PART_S)
            if cut is None:
                notes.append(f"{where}: {missed}; too short to cut")
                continue
            depth = plan[seg.index].get("depth", 0) + 1
            for a, b in ((start, start + cut), (start + cut, end)):
                new.append(_planned(audio, a, b, next_index, depth, parent=seg.index))
                next_index += 1
            replaced.append(seg.index)
            notes.append(f"{where}: {missed}; cut at {(start + cut) / SAMPLE_RATE:.1f} s and routed again")
        return {"segments": new, "replaced": replaced, "reviewed": [s.index for s in fresh], "notes": notes}

    def stitch(self, state: SegmentedState) -> dict[str, Any]:
        segments = _segments(state)
        update: dict[str, Any] = {"answer": _join(s.text for s in segments)}
        action = _majority_action(segments)
        update["action"] = action.value if action is not None else None
        if action is None:
            update["skipped_reason"] = _why_nothing(segments)
        return update

    # ----------------------------------------------------------------- edges

    def fan_out(self, state: SegmentedState) -> list[Send] | str:
        """One branch per planned segment not routed yet (LangGraph runs at most ``max_concurrency`` of
        them at a time), or ``stitch`` when every segment has its result."""
        done = {r["index"] for r in state.get("results") or []}
        todo = [p for p in state.get("segments") or [] if p["index"] not in done]
        if not todo:
            return "stitch"
        prompt = state.get("prompt")
        return [Send("route_segment", SegmentTask(index=p["index"], audio=p["audio"], prompt=prompt)) for p in todo]

    def build(self) -> StateGraph:
        return _assemble(
            {
                "segment": self.segment,
                "route_segment": self.route_segment,
                "review": self.review,
                "stitch": self.stitch,
            },
            {"segment": self.fan_out, "review": self.fan_out},
        )


# --------------------------------------------------------------------- reading the state


def _planned(audio: AudioInput, start: int, end: int, index: int, depth: int, parent: int | None = None) -> dict:
    entry = {"index": index, "audio": audio_segment(audio, start, end, index).ref.model_dump(mode="json")}
    entry["depth"] = depth
    if parent is not None:
        entry["parent"] = parent
    return entry


def _segments(values: Any, *, final: bool = True) -> list[Segment]:
    """The routed segments in time order; ``final``: without the ones that were cut in two."""
    replaced = set(values.get("replaced") or []) if final else set()
    found = (Segment.model_validate(r) for r in values.get("results") or [])
    return sorted((s for s in found if s.index not in replaced), key=lambda s: (s.start, s.index))


def _words(text: str | None) -> int:
    return len(normalize_for(text or "").split())


def missed_words(segment: Segment) -> str | None:
    """Why the segment's answer seems to miss words another tool heard (None: it does not)."""
    if segment.action is None:
        return None
    answer = _words(segment.text)
    heard = [(o.tool, _words(o.top.text)) for o in segment.candidates if o.ok and o.top is not None]
    if not heard:
        return None
    tool, most = max(heard, key=lambda h: h[1])
    if most - answer >= max(LOST_WORDS, LOST_SHARE * answer):
        return f"the answer has {answer} words where {tool} heard {most}"
    return None


def sparse_words(segment: Segment, audio: AudioInput, words_per_s: float) -> str | None:
    """Why the segment's answer seems too short for the speech in it (None: it does not, or the check is off)."""
    if segment.action is None or words_per_s <= 0:
        return None
    start, end = round(segment.start * SAMPLE_RATE), round(segment.end * SAMPLE_RATE)
    speech = speech_seconds(audio.require_samples()[start:end])
    answer = _words(segment.text)
    if speech >= SPARSE_MIN_SPEECH_S and answer < words_per_s * speech:
        return f"the answer has {answer} words for {speech:.1f} s of speech"
    return None


def _join(texts: Any) -> str:
    return " ".join(t.strip() for t in texts if t and t.strip())


def _majority_action(segments: list[Segment]) -> Action | None:
    """The action of most of the answered audio (seconds); ties in the paper's order."""
    seconds = {a: 0.0 for a in ACTIONS}
    for s in segments:
        if s.action is not None:
            seconds[s.action] += max(s.duration, 1e-6)
    if not any(seconds.values()):
        return None
    return max(ACTIONS, key=lambda a: (seconds[a], -ACTIONS.index(a)))


def _why_nothing(segments: list[Segment]) -> str:
    reasons = [s.skipped_reason or "" for s in segments]
    if reasons and all(r.startswith(("no speech", "silent audio")) for r in reasons):
        return f"no speech in any of the {len(segments)} segment(s); perception skipped"
    shown = "; ".join(f"segment {s.index}: {s.skipped_reason}" for s in segments[:3])
    more = f"; ... ({len(segments) - 3} more)" if len(segments) > 3 else ""
    return f"no segment was answered ({shown}{more})"


def joined_candidates(segments: list[Segment]) -> list[ToolOutput]:
    """Per tool, one candidate for the whole input: its top-1 of every segment joined in order, scored
    by the duration-weighted mean of their scores. A tool that failed on every segment keeps its first
    error."""
    names: dict[str, ToolOutput] = {}
    for s in segments:
        for output in s.candidates:
            names.setdefault(output.tool, output)
    joined = []
    for name, first in names.items():
        outputs = [(s, o) for s in segments for o in s.candidates if o.tool == name]
        usable = [(s, o) for s, o in outputs if o.ok and o.top is not None]
        elapsed = sum(o.elapsed_s for _, o in outputs)
        if not usable:
            error = next((o.error for _, o in outputs if o.error is not None), None)
            joined.append(
                ToolOutput(
                    tool=name,
                    role=first.role,
                    kind=first.kind,
                    error=error or ToolError(type="NoHypothesis", message="no hypothesis on any segment"),
                    elapsed_s=elapsed,
                )
            )
            continue
        text = _join(o.top.text for _, o in usable)  # type: ignore[union-attr]
        scored = [(s.duration, o.top.score) for s, o in usable if o.top.score is not None]  # type: ignore[union-attr]
        score = None
        if len(scored) == len(usable) and sum(d for d, _ in scored) > 0:
            score = sum(d * v for d, v in scored) / sum(d for d, _ in scored)
        hypotheses = [Hypothesis(text=text, score=score, source=name, rank=0)] if text else []
        joined.append(ToolOutput(tool=name, role=first.role, kind=first.kind, hypotheses=hypotheses, elapsed_s=elapsed))
    return joined


def segment_notes(segments: list[Segment]) -> list[str]:
    return [f"segment {s.index} ({s.start:.1f}-{s.end:.1f} s): {note}" for s in segments for note in s.notes]


def segmented_result_from_state(values: Any, *, thread_id: str, checkpoint_id: str | None) -> AgentResult:
    """The typed result of a finished segmented run: the stitched answer and every segment."""
    segments = [s.model_copy(update={"index": i}) for i, s in enumerate(_segments(values))]
    audio = AudioRef.model_validate(values["audio"])
    own = [NodeTiming.model_validate(t) for t in values.get("timings") or []]
    action = values.get("action")
    skipped = values.get("skipped_reason")
    if action is None and not skipped:  # a run that has not stitched yet
        skipped = "the run did not finish"
    return AgentResult(
        answer=values.get("answer") or "",
        action=Action(action) if action else None,
        audio=audio,
        question=values.get("question"),
        candidates=joined_candidates(segments),
        rewrite_count=sum(len(s.rewrites) for s in segments),
        timings=[*own, *(t for s in segments for t in s.timings)],
        skipped_reason=skipped,
        notes=[*(values.get("notes") or []), *segment_notes(segments)],
        segments=segments,
        thread_id=thread_id,
        checkpoint_id=checkpoint_id,
    )
