"""The typed domain of speech-hands, in one module.

Everything that crosses a boundary (tool outputs, graph state read back from a checkpoint, the result a
user gets, JSON on the CLI) is one of these pydantic models. Graph state itself stores their
``model_dump(mode="json")`` form so checkpoints stay plain JSON-like data and never hold raw audio.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

__all__ = [
    "ACTION_TOKENS",
    "Action",
    "AgentResult",
    "AudioRef",
    "Hypothesis",
    "NodeTiming",
    "Reflection",
    "RewriteRecord",
    "Segment",
    "ToolError",
    "ToolKind",
    "ToolOutput",
    "ToolRole",
]


class Action(str, Enum):
    """The three first-token actions of the self-reflection model (docs/method.md section 1)."""

    INTERNAL = "internal"
    EXTERNAL = "external"
    REWRITE = "rewrite"

    @property
    def token(self) -> str:
        """The special token the omni model emits, e.g. ``<internal>``."""
        return f"<{self.value}>"

    @classmethod
    def from_token(cls, token: str) -> Action:
        """Parse ``<internal>`` / ``internal`` (any case, surrounding whitespace ignored)."""
        cleaned = token.strip().strip("<>").strip().lower()
        try:
            return cls(cleaned)
        except ValueError as exc:
            raise ValueError(f"not an action token: {token!r} (expected one of {ACTION_TOKENS})") from exc

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


#: Action tokens in a fixed order; probability vectors follow this order.
ACTION_TOKENS: tuple[str, ...] = tuple(a.token for a in Action)

ToolRole = Literal["internal", "external"]
ToolKind = Literal["asr", "caption", "answer"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AudioRef(_Frozen):
    """A reference to audio. Raw samples never go into graph state or checkpoints: nodes fetch them
    from the per-process :class:`speech_hands.audio.AudioStore` by ``sha256`` (reloading from ``path``
    when the cache misses, e.g. in another process).

    ``path`` is ``None`` for a *virtual* reference: routing over recorded tool outputs (replay) where
    no audio exists, as in the paper's scripts. ``id`` is what replay backends key on (the file stem by
    default).

    A *segment* of a long input (long audio is routed segment by segment) sets ``start_s`` / ``end_s``
    (where it lies in the whole input) and ``source_sha256`` (the whole input's ``sha256``);
    ``sha256`` is then that of the segment's samples, and ``path`` the whole input's file. The three
    fields are left out of the serialised form when unset, so references to whole inputs (and the
    traces that hold them) read as they always did.
    """

    id: str
    path: str | None = None
    sha256: str | None = None
    duration_s: float = Field(default=0.0, ge=0.0)
    sample_rate: int | None = Field(default=None, description="sample rate of the file as stored")
    channels: int | None = None
    silent: bool = False
    start_s: float | None = Field(default=None, ge=0.0, description="a segment: its start in the whole input, s")
    end_s: float | None = Field(default=None, ge=0.0, description="a segment: its end in the whole input, s")
    source_sha256: str | None = Field(default=None, description="a segment: the whole input's sha256")

    @property
    def is_virtual(self) -> bool:
        return self.path is None

    @property
    def is_segment(self) -> bool:
        return self.source_sha256 is not None

    @model_serializer(mode="wrap")
    def _leave_out_unset_segment(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key in _SEGMENT_FIELDS:
            if data.get(key) is None:
                data.pop(key, None)
        return data


_SEGMENT_FIELDS = ("start_s", "end_s", "source_sha256")


class Hypothesis(_Frozen):
    """One candidate text from one tool. ``score`` is tool-specific; for Whisper backends it is the
    length-normalised log-probability (mean log-prob per token), so ``exp(score)`` is a per-token
    probability. ``rank`` is 0 for the tool's best candidate."""

    text: str
    score: float | None = None
    source: str
    rank: int = Field(default=0, ge=0)


class ToolError(_Frozen):
    """Why a tool produced nothing; kept in the trace instead of crashing the graph."""

    type: str
    message: str
    timed_out: bool = False


class ToolOutput(_Frozen):
    """Everything one perception tool said about one input (its N-best list, or its answer)."""

    tool: str
    role: ToolRole
    kind: ToolKind = "asr"
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    rejected: list[Hypothesis] = Field(
        default_factory=list, description="what the tool returned that cannot be a transcript of this audio"
    )
    error: ToolError | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.hypotheses)

    @property
    def top(self) -> Hypothesis | None:
        return self.hypotheses[0] if self.hypotheses else None


class Reflection(_Frozen):
    """One first-token decision: the action, the probability of each of the three actions, the raw
    token the policy produced, and which policy produced it.

    ``external_rank`` names the external candidate that ``<external>`` accepts (top-1 unless the
    policy says otherwise); ``external_tool`` which external tool it belongs to. ``answer`` carries
    the text a generative policy wrote after its token (majority sampling votes on it).
    """

    action: Action
    probs: dict[Action, float]
    raw_token: str
    policy: str
    external_tool: str | None = None
    external_rank: int = Field(default=0, ge=0, description="rank in the external tool's N-best, 0 = top-1")
    answer: str | None = None
    round: int = Field(default=0, ge=0, description="0 before any rewrite, n after the n-th rewrite")
    sample_index: int = 0
    rationale: str | None = None

    @field_validator("probs")
    @classmethod
    def _check_probs(cls, probs: dict[Action, float]) -> dict[Action, float]:
        missing = [a.value for a in Action if a not in probs]
        if missing:
            raise ValueError(f"probabilities missing for actions {missing}")
        if not all(0.0 <= p <= 1.0 for p in probs.values()):  # NaN fails this too
            raise ValueError(f"action probabilities must lie in [0, 1] (got {probs})")
        total = sum(probs.values())
        if abs(total - 1.0) > 1e-4:
            raise ValueError(f"action probabilities must sum to 1 (got {total:.6f})")
        return {a: float(probs[a]) for a in Action}

    @property
    def confidence(self) -> float:
        return self.probs[self.action]


class RewriteRecord(_Frozen):
    """One pass of the rewrite node: what it produced, from which candidates, with which strategy."""

    text: str
    strategy: str
    round: int
    n_candidates: int
    confidence: float | None = None


class NodeTiming(_Frozen):
    node: str
    elapsed_s: float
    started_at: float


class CandidateViews:
    """Read-only views over a ``candidates: list[ToolOutput]`` field (results and eval records)."""

    candidates: list[ToolOutput]

    @property
    def internal(self) -> ToolOutput | None:
        return next((c for c in self.candidates if c.role == "internal"), None)

    @property
    def externals(self) -> list[ToolOutput]:
        return [c for c in self.candidates if c.role == "external"]

    @property
    def failed_tools(self) -> list[ToolOutput]:
        return [c for c in self.candidates if c.error is not None]


class Segment(CandidateViews, _Frozen):
    """One stretch of the input with its own answer (faster-whisper style: ``start``, ``end``, ``text``).

    Long audio is cut into segments that are each routed on their own: every tool's candidates, the
    first-token decision and its probabilities, the rewrite. ``checkpoint_ns`` says where the
    segment's routing run is stored in the thread (None: the thread's own run, an input that was not
    cut). An input that was not cut is one segment covering it."""

    index: int = Field(ge=0)
    start: float = Field(ge=0.0, description="seconds from the start of the input")
    end: float = Field(ge=0.0, description="seconds from the start of the input")
    text: str
    action: Action | None = Field(description="where the text came from; None when the segment was skipped")
    reflection: Reflection | None = Field(default=None, description="the first-token decision (round 0)")
    candidates: list[ToolOutput] = Field(default_factory=list)
    rewrites: list[RewriteRecord] = Field(default_factory=list)
    skipped_reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    timings: list[NodeTiming] = Field(default_factory=list)
    elapsed_s: float = Field(default=0.0, description="wall time of the segment's routing run")
    checkpoint_ns: str | None = None

    @property
    def probs(self) -> dict[Action, float] | None:
        """P(internal), P(external), P(rewrite) of the segment's first decision."""
        return self.reflection.probs if self.reflection is not None else None

    @property
    def duration(self) -> float:
        return self.end - self.start


class AgentResult(CandidateViews, BaseModel):
    """What :meth:`speech_hands.SpeechHands.invoke` returns: the answer and why it was chosen."""

    model_config = ConfigDict(extra="forbid")

    answer: str
    action: Action | None = Field(
        description="where the answer came from: internal (own first pass), external (a tool's candidate) or "
        "rewrite (a rewrite, possibly confirmed by later reflections); None only when the input was skipped"
    )
    audio: AudioRef
    question: str | None = None
    candidates: list[ToolOutput] = Field(default_factory=list)
    reflection: Reflection | None = Field(default=None, description="the first-token decision (round 0)")
    reflections: list[Reflection] = Field(default_factory=list, description="every decision, round by round")
    samples: list[Reflection] = Field(default_factory=list, description="majority-sampling draws")
    rewrites: list[RewriteRecord] = Field(default_factory=list)
    rewrite_count: int = 0
    timings: list[NodeTiming] = Field(default_factory=list)
    skipped_reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    segments: list[Segment] = Field(
        default_factory=list,
        description="the answer by stretch of audio, in order, with timestamps: one segment covering the input, "
        "or, for long audio routed segment by segment, every segment's own candidates, decision and text",
    )
    thread_id: str
    checkpoint_id: str | None = None
    pending_review: dict[str, Any] | None = Field(
        default=None,
        description="the run is paused for a person's review (interrupt_on / interrupt_below): what they are "
        "asked (speech_hands.graphs.events.ReviewRequest); SpeechHands.resume continues it",
    )

    @model_validator(mode="after")
    def _action_needs_reason(self) -> AgentResult:
        if self.action is None and not self.skipped_reason:
            raise ValueError("a result without an action must say why it was skipped")
        return self

    def timing(self, node: str) -> float:
        """Total seconds spent in ``node`` (summed over rounds)."""
        return sum(t.elapsed_s for t in self.timings if t.node == node)
