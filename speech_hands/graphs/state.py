"""The routing graph's state: references and text only, plain JSON-like data.

Lists grow through the :func:`extend` reducer, so parallel branches (perception tools, majority
samples) each add their part without overwriting the others. Passing ``None`` for a list resets it:
:meth:`SpeechHands.invoke` does that at the start of every run, so reusing a ``thread_id`` starts a
fresh decision while the checkpointer keeps the older runs in the thread's history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypedDict

from speech_hands.types import (
    Action,
    AgentResult,
    AudioRef,
    NodeTiming,
    Reflection,
    RewriteRecord,
    ToolOutput,
)


def extend(left: list[Any] | None, right: list[Any] | None) -> list[Any]:
    """Append ``right`` to ``left``; ``None`` on the right resets the list."""
    if right is None:
        return []
    return [*(left or []), *right]


class RoutingState(TypedDict, total=False):
    audio: dict[str, Any]  # AudioRef
    question: str | None
    outputs: Annotated[list[dict[str, Any]], extend]  # ToolOutput, one per perception tool
    samples: Annotated[list[dict[str, Any]], extend]  # Reflection draws (all rounds)
    reflections: Annotated[list[dict[str, Any]], extend]  # the decided Reflection of each round
    votes: Annotated[list[dict[str, Any]], extend]  # majority-vote tallies (k > 1)
    rewrites: Annotated[list[dict[str, Any]], extend]  # RewriteRecord
    timings: Annotated[list[dict[str, Any]], extend]  # NodeTiming
    notes: Annotated[list[str], extend]  # human-readable trace notes (failed tools, fallbacks)
    round: int
    answer: str | None
    action: str | None
    skipped_reason: str | None
    rewrite_error: str | None  # the rewrite raised: the run ends on the internal prediction


class PerceiveTask(TypedDict):
    """The payload ``Send`` hands to one perception branch."""

    tool: str
    audio: dict[str, Any]
    question: str | None


class ReflectTask(TypedDict):
    """The payload ``Send`` hands to one reflection draw."""

    sample_index: int
    n_samples: int
    state: dict[str, Any]


def fresh_input(audio: dict[str, Any], question: str | None) -> RoutingState:
    """The input of one run: the audio and question, every list reset."""
    return RoutingState(
        audio=audio,
        question=question,
        outputs=None,  # type: ignore[typeddict-item]
        samples=None,  # type: ignore[typeddict-item]
        reflections=None,  # type: ignore[typeddict-item]
        votes=None,  # type: ignore[typeddict-item]
        rewrites=None,  # type: ignore[typeddict-item]
        timings=None,  # type: ignore[typeddict-item]
        notes=None,  # type: ignore[typeddict-item]
        round=0,
        answer=None,
        action=None,
        skipped_reason=None,
        rewrite_error=None,
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
