"""Reading a thread's checkpoints back as a decision trace.

The checkpointer stores a snapshot after every super-step. Following the chain of parent checkpoints
(``parent_config``) back from the latest one (or a chosen one) to the run's input, and listing the tasks
each step ran (with what they wrote), gives the route that was taken and why: which tools answered (or
failed), the action probabilities of every draw, the vote, the rewrites. No model is re-run. Because the
trace follows parents rather than time, a thread forked by time travel (``update_state`` on an older
checkpoint, then running on) shows the one branch that leads to the chosen checkpoint: a step whose
successor in the chain is not its own ``loop`` step (an ``update`` or ``fork``) did not lead there.

A long input routed segment by segment (:mod:`speech_hands.graphs.segments`) leaves the segmenting
graph's steps in the thread, and each segment's routing run under the namespace recorded in its
result: the trace then holds the outer steps and one :class:`SegmentTrace` per segment (its span,
action and steps).

A voice-assistant thread (:mod:`speech_hands.graphs.assistant`) holds one conversation: each turn's
routing run is checkpointed under the namespace its turn records. Its trace is the routing trace of
one turn (the latest by default; :func:`read_turn_trace`), with every turn's route in ``turns``.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field

from speech_hands.errors import SpeechHandsError
from speech_hands.graphs.segments import is_segmented_thread, segmented_result_from_state, segmented_shape
from speech_hands.graphs.state import result_from_state
from speech_hands.types import Action, AgentResult


class TraceStep(BaseModel):
    """One super-step: the checkpoint it ran from and the node tasks it executed."""

    step: int
    checkpoint_id: str
    created_at: str | None = None
    nodes: list[str] = Field(default_factory=list)
    writes: list[dict[str, Any]] = Field(default_factory=list, description="per task: node name and its update")


class SegmentTrace(BaseModel):
    """One segment of a long input: its span, its action, and its routing run step by step."""

    index: int
    start: float
    end: float
    action: Action | None = None
    checkpoint_ns: str | None = None
    steps: list[TraceStep] = Field(default_factory=list)

    @property
    def route(self) -> list[str]:
        return [node for step in self.steps for node in step.nodes]


class TurnTrace(BaseModel):
    """One user turn of a voice-assistant conversation: what was heard and replied, and its routing steps."""

    index: int
    question: str | None = None
    transcript: str = ""
    action: Action | None = None
    reply: str | None = None
    checkpoint_ns: str | None = None
    steps: list[TraceStep] = Field(default_factory=list)

    @property
    def route(self) -> list[str]:
        return [node for step in self.steps for node in step.nodes]


class DecisionTrace(BaseModel):
    thread_id: str
    steps: list[TraceStep]
    result: AgentResult | None = Field(default=None, description="None if the run did not finish")
    segments: list[SegmentTrace] = Field(
        default_factory=list, description="long input routed segment by segment: every segment's run"
    )
    turn: int | None = Field(default=None, description="a voice-assistant thread: the turn these steps route")
    turns: list[TurnTrace] = Field(
        default_factory=list, description="a voice-assistant thread: every turn with its routing steps"
    )

    @property
    def route(self) -> list[str]:
        """Node names in execution order (parallel branches listed once per branch)."""
        return [node for step in self.steps for node in step.nodes]


def read_trace(
    graph: CompiledStateGraph,
    thread_id: str,
    *,
    segmented: CompiledStateGraph | None = None,
    checkpoint_id: str | None = None,
) -> DecisionTrace:
    """The decision trace of the LATEST run on ``thread_id`` (a thread reused for several runs keeps
    all of them in its history; this returns the last one). ``graph`` is the routing graph (or its
    shape) over the checkpointer; a thread of the segmenting graph is read with ``segmented`` (default:
    its shape over the same checkpointer), each segment's run with ``graph``. ``checkpoint_id``: the run
    that leads to that checkpoint (default: the latest)."""
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    if checkpoint_id is not None:
        config["configurable"]["checkpoint_id"] = checkpoint_id
    if graph.checkpointer is not None and assistant_turns(graph.checkpointer, thread_id) is not None:
        return read_turn_trace(graph, thread_id, None, segmented=segmented)
    if graph.checkpointer is not None and is_segmented_thread(graph.checkpointer, thread_id):
        outer = segmented or segmented_shape().compile(checkpointer=graph.checkpointer)
        return _read_segmented(graph, outer, config, thread_id)
    return _read_run(graph, config, thread_id, result_from_state)


def _read_segmented(
    graph: CompiledStateGraph, outer: CompiledStateGraph, config: dict[str, Any], thread_id: str
) -> DecisionTrace:
    """A segmented run (in the namespace ``config`` names): its outer steps and every segment's routing steps."""
    trace = _read_run(outer, config, thread_id, segmented_result_from_state)
    if trace.result is not None:
        trace.segments = [
            SegmentTrace(
                index=s.index,
                start=s.start,
                end=s.end,
                action=s.action,
                checkpoint_ns=s.checkpoint_ns,
                steps=_read_run(
                    graph,
                    {"configurable": {"thread_id": thread_id, "checkpoint_ns": s.checkpoint_ns}},  # latest
                    thread_id,
                    None,
                ).steps
                if s.checkpoint_ns
                else [],
            )
            for s in trace.result.segments
        ]
    return trace


def assistant_turns(checkpointer: Any, thread_id: str) -> list[dict[str, Any]] | None:
    """The turns of a voice-assistant thread, oldest first (None: not an assistant thread)."""
    latest = checkpointer.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    values = (latest.checkpoint.get("channel_values") or {}) if latest is not None else {}
    turns = values.get("turns")
    return list(turns) if isinstance(turns, list) else None


def read_turn_trace(
    graph: CompiledStateGraph,
    thread_id: str,
    turn: int | None = None,
    *,
    segmented: CompiledStateGraph | None = None,
) -> DecisionTrace:
    """The routing trace of turn ``turn`` (1-based; None: the latest) of a voice-assistant thread, read
    from the namespace the turn recorded, with every turn's route in ``turns``. ``graph``: the routing
    graph (or its shape) over the checkpointer."""
    turns = assistant_turns(graph.checkpointer, thread_id) if graph.checkpointer is not None else None
    if not turns:
        raise SpeechHandsError(f"no conversation turns for thread {thread_id!r} in this checkpointer")
    chosen = turn if turn is not None else len(turns)
    if not 1 <= chosen <= len(turns):
        raise SpeechHandsError(f"thread {thread_id!r} has turns 1 to {len(turns)}, not {chosen}")
    outer = segmented or segmented_shape().compile(checkpointer=graph.checkpointer)

    def one(record: dict[str, Any], *, build: bool) -> DecisionTrace | None:
        ns = record.get("checkpoint_ns")
        if not ns:
            return None
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
        if record.get("segmented"):
            return (
                _read_segmented(graph, outer, config, thread_id) if build else _read_run(outer, config, thread_id, None)
            )
        return _read_run(graph, config, thread_id, result_from_state if build else None)

    picked = one(turns[chosen - 1], build=True)
    trace = picked or DecisionTrace(thread_id=thread_id, steps=[])
    summaries = []
    for i, record in enumerate(turns, 1):
        steps = trace.steps if i == chosen else (found.steps if (found := one(record, build=False)) else [])
        summaries.append(
            TurnTrace(
                index=int(record.get("index", i)),
                question=record.get("question"),
                transcript=record.get("transcript") or "",
                action=record.get("action"),
                reply=record.get("reply"),
                checkpoint_ns=record.get("checkpoint_ns"),
                steps=steps,
            )
        )
    return trace.model_copy(update={"turn": chosen, "turns": summaries})


def _read_run(graph: CompiledStateGraph, config: dict[str, Any], thread_id: str, build: Any) -> DecisionTrace:
    """The steps of the latest run in one namespace of a thread, and its result (``build``; None: none)."""
    run = _branch(graph, config)
    if not run:
        raise SpeechHandsError(f"no trace for thread {thread_id!r} in this checkpointer; check the id and --trace-db")
    steps: list[TraceStep] = []
    for i, snap in enumerate(run):
        following = run[i + 1] if i + 1 < len(run) else None
        if following is not None and (following.metadata or {}).get("source") != "loop":
            continue  # its tasks' writes led elsewhere (the branch goes on from an update / fork)
        tasks = [t for t in snap.tasks if t.name != "__start__"]
        if not tasks:
            continue
        steps.append(
            TraceStep(
                step=int((snap.metadata or {}).get("step", len(steps))),
                checkpoint_id=snap.config["configurable"]["checkpoint_id"],
                created_at=snap.created_at,
                nodes=[t.name for t in tasks],
                writes=[
                    {"node": t.name, "update": _jsonable(t.result), "error": t.error and str(t.error)} for t in tasks
                ],
            )
        )
    final = run[-1]
    result = None
    if build is not None and not final.next and final.values.get("audio") is not None:
        result = build(final.values, thread_id=thread_id, checkpoint_id=final.config["configurable"]["checkpoint_id"])
    return DecisionTrace(thread_id=thread_id, steps=steps, result=result)


def _branch(graph: CompiledStateGraph, config: dict[str, Any]) -> list[Any]:
    """The snapshots of one run, oldest first: from the chosen (default: latest) checkpoint back along
    ``parent_config`` to the run's input checkpoint (``source == "input"``)."""
    configurable = config["configurable"]
    wanted = configurable.get("checkpoint_id")
    listing = {k: v for k, v in configurable.items() if k != "checkpoint_id"}
    by_id = {
        snap.config["configurable"]["checkpoint_id"]: snap
        for snap in graph.get_state_history({"configurable": listing})
    }
    if not by_id:
        return []
    if wanted is not None and wanted not in by_id:
        raise SpeechHandsError(f"no checkpoint {wanted!r} in thread {configurable.get('thread_id')!r}")
    latest = by_id[wanted] if wanted is not None else next(iter(by_id.values()))  # history is newest first
    chain = [latest]
    while (chain[-1].metadata or {}).get("source") != "input" and chain[-1].parent_config is not None:
        parent = by_id.get(chain[-1].parent_config["configurable"].get("checkpoint_id"))
        if parent is None:
            break
        chain.append(parent)
    chain.reverse()
    return chain


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
