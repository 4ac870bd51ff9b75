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


class DecisionTrace(BaseModel):
    thread_id: str
    steps: list[TraceStep]
    result: AgentResult | None = Field(default=None, description="None if the run did not finish")
    segments: list[SegmentTrace] = Field(
        default_factory=list, description="long input routed segment by segment: every segment's run"
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
    if graph.checkpointer is not None and is_segmented_thread(graph.checkpointer, thread_id):
        outer = segmented or segmented_shape().compile(checkpointer=graph.checkpointer)
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
    return _read_run(graph, config, thread_id, result_from_state)


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
