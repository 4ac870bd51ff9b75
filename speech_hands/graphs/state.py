"""The routing graph's state, and typed read-only access to it.

The state is plain JSON-like data (references and text only), so every checkpoint the graph writes
stays plain data that any process can read back. Nodes never index it by hand: they read it through a
:class:`StateView`, which validates each value into its typed model (:class:`ToolOutput`,
:class:`Reflection`, ...) once, the first time a node asks for it.

Lists grow through the :func:`extend` reducer, so parallel branches (perception tools, majority
samples) each add their part without overwriting the others. Passing ``None`` for a list resets it:
:meth:`SpeechHands.invoke` does that at the start of every run, so reusing a ``thread_id`` starts a
fresh decision while the checkpointer keeps the older runs in the thread's history.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any

from typing_extensions import NotRequired, TypedDict  # pydantic needs it on Python < 3.12 (JSON schemas)

from speech_hands.types import (
    Action,
    AgentResult,
    AudioRef,
    NodeTiming,
    Reflection,
    RewriteRecord,
    Segment,
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
    prompt: str | None  # text said before this audio (a conversation's earlier turns): the ASR tools' prompt
    outputs: Annotated[list[dict[str, Any]], extend]  # ToolOutput, one per perception tool
    samples: Annotated[list[dict[str, Any]], extend]  # Reflection draws (all rounds)
    reflections: Annotated[list[dict[str, Any]], extend]  # the decided Reflection of each round
    votes: Annotated[list[dict[str, Any]], extend]  # majority-vote tallies (k > 1)
    rewrites: Annotated[list[dict[str, Any]], extend]  # RewriteRecord
    timings: Annotated[list[dict[str, Any]], extend]  # NodeTiming
    notes: Annotated[list[str], extend]  # human-readable trace notes (failed tools, fallbacks)
    round: int
    answer: str | None
    action: str | None  # the round's decided Action; once answered, where the answer came from
    # The node the round's decision leads to, set by ``vote`` (the decided action with the rewrite
    # budget applied); the edge after ``vote`` only reads it.
    route: str | None
    skipped_reason: str | None
    rewrite_error: str | None  # the rewrite raised: the run ends on the internal prediction
    # failover (set by ``prepare``): external tools this run does not call, and those it probes
    unavailable: list[str] | None
    probing: list[str] | None


class PerceiveTask(TypedDict):
    """The payload ``Send`` hands to one perception branch."""

    tool: str
    audio: dict[str, Any]
    question: str | None
    n_best: NotRequired[int]  # the run's N-best size (part of the perception cache key)
    prompt: NotRequired[str | None]  # the run's ASR prompt (part of the perception cache key)
    probe: NotRequired[bool]  # the call probes an unavailable tool (failover)


class ReflectTask(TypedDict):
    """The payload ``Send`` hands to one reflection draw."""

    sample_index: int
    n_samples: int
    state: dict[str, Any]


class StateView:
    """Typed, read-only access to a :class:`RoutingState` (or the snapshot a :class:`ReflectTask`
    carries). Each value is validated the first time it is read and kept, so a node that builds one
    view validates every value it uses once. Lists come back as tuples: the view never changes the
    state; nodes change it only by returning an update."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self._state = state

    @cached_property
    def audio(self) -> AudioRef:
        return AudioRef.model_validate(self._state["audio"])

    @property
    def question(self) -> str | None:
        return self._state.get("question")

    @property
    def prompt(self) -> str | None:
        """Text said before this audio, handed to the ASR tools that take a prompt (None: none)."""
        return self._state.get("prompt")

    @property
    def round(self) -> int:
        """0 before any rewrite, n after the n-th rewrite."""
        return self._state.get("round", 0)

    @cached_property
    def outputs(self) -> tuple[ToolOutput, ...]:
        """Every perception tool's output, failed ones included."""
        return tuple(ToolOutput.model_validate(o) for o in self._state.get("outputs") or [])

    @cached_property
    def original_internal(self) -> ToolOutput | None:
        """The internal perception tool's output: the model's own first prediction."""
        return next((o for o in self.outputs if o.role == "internal"), None)

    @cached_property
    def externals(self) -> tuple[ToolOutput, ...]:
        return tuple(o for o in self.outputs if o.role == "external")

    @cached_property
    def samples(self) -> tuple[Reflection, ...]:
        """Every reflection draw of every round."""
        return tuple(Reflection.model_validate(s) for s in self._state.get("samples") or [])

    @cached_property
    def reflections(self) -> tuple[Reflection, ...]:
        """The decided reflection of each round, oldest first."""
        return tuple(Reflection.model_validate(r) for r in self._state.get("reflections") or [])

    @property
    def decided(self) -> Reflection | None:
        """The latest round's decision, ``None`` before the first vote."""
        return self.reflections[-1] if self.reflections else None

    @cached_property
    def rewrites(self) -> tuple[RewriteRecord, ...]:
        return tuple(RewriteRecord.model_validate(r) for r in self._state.get("rewrites") or [])

    @cached_property
    def timings(self) -> tuple[NodeTiming, ...]:
        return tuple(NodeTiming.model_validate(t) for t in self._state.get("timings") or [])

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self._state.get("notes") or [])

    @property
    def answer(self) -> str | None:
        return self._state.get("answer")

    @property
    def action(self) -> Action | None:
        action = self._state.get("action")
        return Action(action) if action else None

    @property
    def route(self) -> str | None:
        return self._state.get("route")

    @property
    def skipped_reason(self) -> str | None:
        return self._state.get("skipped_reason")

    @property
    def rewrite_error(self) -> str | None:
        return self._state.get("rewrite_error")


def fresh_input(audio: dict[str, Any], question: str | None, prompt: str | None = None) -> RoutingState:
    """The input of one run: the audio, question and ASR prompt, every list reset."""
    return RoutingState(
        audio=audio,
        question=question,
        prompt=prompt,
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
        route=None,
        skipped_reason=None,
        rewrite_error=None,
        unavailable=None,
        probing=None,
    )


def wall_seconds(timings: tuple[NodeTiming, ...] | list[NodeTiming]) -> float:
    """Wall time from the first node's start to the last node's end (parallel branches overlap)."""
    if not timings:
        return 0.0
    return max(t.started_at + t.elapsed_s for t in timings) - min(t.started_at for t in timings)


def segment_from_state(values: Mapping[str, Any], *, index: int = 0, checkpoint_ns: str | None = None) -> Segment:
    """A finished routing run as one :class:`Segment`: the span of its audio (a segment of a longer
    input, or the whole input) with its answer, decision, candidates and notes."""
    view = StateView(values)
    audio = view.audio
    start = audio.start_s if audio.start_s is not None else 0.0
    end = audio.end_s if audio.end_s is not None else start + audio.duration_s
    skipped = view.skipped_reason
    return Segment(
        index=index,
        start=round(start, 3),
        end=round(end, 3),
        text=view.answer or "",
        action=view.action if not skipped else None,
        reflection=view.reflections[0] if view.reflections else None,
        candidates=list(view.outputs),
        rewrites=list(view.rewrites),
        skipped_reason=skipped,
        notes=list(view.notes),
        timings=list(view.timings),
        elapsed_s=round(wall_seconds(view.timings), 4),
        checkpoint_ns=checkpoint_ns,
    )


def result_from_state(values: Mapping[str, Any], *, thread_id: str, checkpoint_id: str | None) -> AgentResult:
    """The typed result of a finished run, from the state's plain data (one segment: the whole input)."""
    view = StateView(values)
    skipped = view.skipped_reason
    return AgentResult(
        answer=view.answer or "",
        action=view.action if not skipped else None,
        audio=view.audio,
        question=view.question,
        candidates=list(view.outputs),
        reflection=view.reflections[0] if view.reflections else None,
        reflections=list(view.reflections),
        samples=list(view.samples),
        rewrites=list(view.rewrites),
        rewrite_count=len(view.rewrites),
        timings=list(view.timings),
        skipped_reason=skipped,
        notes=list(view.notes),
        segments=[segment_from_state(values)],
        thread_id=thread_id,
        checkpoint_id=checkpoint_id,
    )
