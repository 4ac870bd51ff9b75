"""Reading a thread's checkpoints back as a decision trace.

The checkpointer stores a snapshot after every super-step. Walking ``get_state_history`` oldest first
and listing the tasks each step ran (with what they wrote) gives the route that was taken and why:
which tools answered (or failed), the action probabilities of every draw, the vote, the rewrites.
No model is re-run.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field

from speech_hands.errors import SpeechHandsError
from speech_hands.graphs.state import result_from_state
from speech_hands.types import AgentResult


class TraceStep(BaseModel):
    """One super-step: the checkpoint it ran from and the node tasks it executed."""

    step: int
    checkpoint_id: str
    created_at: str | None = None
    nodes: list[str] = Field(default_factory=list)
    writes: list[dict[str, Any]] = Field(default_factory=list, description="per task: node name and its update")


class DecisionTrace(BaseModel):
    thread_id: str
    steps: list[TraceStep]
    result: AgentResult | None = Field(default=None, description="None if the run did not finish")

    @property
    def route(self) -> list[str]:
        """Node names in execution order (parallel branches listed once per branch)."""
        return [node for step in self.steps for node in step.nodes]


def read_trace(graph: CompiledStateGraph, thread_id: str) -> DecisionTrace:
    """The decision trace of the LATEST run on ``thread_id`` (a thread reused for several runs keeps
    all of them in its history; this returns the last one)."""
    config = {"configurable": {"thread_id": thread_id}}
    history = list(graph.get_state_history(config))
    if not history:
        raise SpeechHandsError(f"no trace for thread {thread_id!r} in this checkpointer; check the id and --trace-db")
    history.reverse()  # oldest first
    # A run starts at an input checkpoint (source == "input"); keep the last run only.
    starts = [i for i, snap in enumerate(history) if (snap.metadata or {}).get("source") == "input"]
    run = history[starts[-1] :] if starts else history
    steps: list[TraceStep] = []
    for snap in run:
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
    if not final.next and final.values.get("audio") is not None:
        result = result_from_state(
            final.values, thread_id=thread_id, checkpoint_id=final.config["configurable"]["checkpoint_id"]
        )
    return DecisionTrace(thread_id=thread_id, steps=steps, result=result)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
