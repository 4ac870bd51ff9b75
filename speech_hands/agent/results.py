"""Turning graph state (live or read back from a checkpoint) into an :class:`AgentResult`."""

from __future__ import annotations

from typing import Any, Mapping

from speech_hands.types import (
    Action,
    AgentResult,
    AudioRef,
    NodeTiming,
    Reflection,
    RewriteRecord,
    ToolOutput,
)


def result_from_state(values: Mapping[str, Any], *, thread_id: str, checkpoint_id: str | None) -> AgentResult:
    """Validate the state's plain data back into typed models."""
    reflections = [Reflection.model_validate(r) for r in values.get("reflections") or []]
    action = values.get("action")
    skipped = values.get("skipped_reason")
    return AgentResult(
        answer=values.get("answer") or "",
        action=Action(action) if action and not skipped else None,
        audio=AudioRef.model_validate(values["audio"]),
        question=values.get("question"),
        candidates=[ToolOutput.model_validate(o) for o in values.get("outputs") or []],
        reflection=reflections[0] if reflections else None,
        reflections=reflections,
        samples=[Reflection.model_validate(s) for s in values.get("samples") or []],
        rewrites=[RewriteRecord.model_validate(r) for r in values.get("rewrites") or []],
        rewrite_count=len(values.get("rewrites") or []),
        timings=[NodeTiming.model_validate(t) for t in values.get("timings") or []],
        skipped_reason=skipped,
        notes=list(values.get("notes") or []),
        thread_id=thread_id,
        checkpoint_id=checkpoint_id,
    )
