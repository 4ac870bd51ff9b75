"""The typed payloads of the graphs' custom stream events (LangGraph ``stream_mode="custom"``).

Nodes write one of these through :func:`emit` (``langgraph.config.get_stream_writer()``); a consumer
reads them from ``graph.stream(..., stream_mode="custom")`` or ``SpeechHands.stream(...,
stream_mode="custom")`` as plain JSON dicts and turns them back into models with
:func:`parse_event`. Every payload carries ``event`` (its type) and is JSON-ready::

    for chunk in agent.stream("a.flac", stream_mode="custom"):
        event = parse_event(chunk)
        if isinstance(event, DecisionEvent):
            print(event.action, event.probs)

- :class:`ToolStarted` / :class:`ToolFinished`: one perception tool call (``perceive``), its wall time and
  error, if any;
- :class:`ToolAvailability`: an external tool marked unavailable, probed again, its probe failed, or
  restored (:mod:`speech_hands.graphs.availability`);
- :class:`DecisionEvent`: a round's decision (``vote``): action, the three probabilities, policy, route;
- :class:`VoteEvent`: the majority-vote tally when ``k_samples > 1``;
- :class:`RewriteEvent`: a rewrite (``rewrite``): its strategy, text and how many candidates it saw;
- :class:`ReviewRequest`: the payload of the ``interrupt`` raised when a person is asked to confirm a
  decision (it is in ``__interrupt__``, not in the custom stream).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class ToolStarted(_Event):
    event: Literal["tool_started"] = "tool_started"
    tool: str
    role: str
    n_best: int
    audio_id: str


class ToolFinished(_Event):
    event: Literal["tool_finished"] = "tool_finished"
    tool: str
    role: str
    elapsed_s: float
    ok: bool
    n_hypotheses: int = 0
    top: str | None = Field(default=None, description="the top hypothesis")
    error: str | None = Field(default=None, description="'Type: message' when the call failed or timed out")


class ToolAvailability(_Event):
    """An availability change of an external tool (failover), written by the node that saw it."""

    event: Literal["tool_availability"] = "tool_availability"
    tool: str
    change: Literal["unavailable", "probing", "probe_failed", "restored"]
    available: bool = Field(description="whether the tool takes part in routing after this change")
    consecutive_failures: int
    error: str | None = Field(default=None, description="the failure that led to the change, if any")
    next_probe_in_s: float | None = Field(default=None, description="when the tool is called again (unavailable)")
    message: str = Field(description="the same change as a trace note")


class DecisionEvent(_Event):
    event: Literal["decision"] = "decision"
    round: int
    action: str = Field(description="internal / external / rewrite")
    probs: dict[str, float] = Field(description="P(action) of each of the three actions")
    policy: str
    route: str = Field(description="the node the decision leads to")
    n_draws: int = 1
    reviewed: bool = Field(default=False, description="a person confirmed or overrode the decision")


class VoteEvent(_Event):
    event: Literal["vote"] = "vote"
    round: int
    tally: dict[str, float] = Field(description="weight of each distinct answer (or action token)")
    winner: str
    tie_broken_by: str | None = None


class RewriteEvent(_Event):
    event: Literal["rewrite"] = "rewrite"
    round: int
    strategy: str
    text: str
    n_candidates: int
    candidates: list[str] = Field(default_factory=list, description="the top text of each candidate source")
    error: str | None = None


class ReviewRequest(_Event):
    """What a person is asked when the graph interrupts before a decision's edge."""

    event: Literal["review"] = "review"
    round: int
    action: str
    probs: dict[str, float]
    policy: str
    route: str
    why: str
    candidates: dict[str, str] = Field(default_factory=dict, description="tool -> its top text")
    options: list[str] = Field(default_factory=lambda: ["internal", "external", "rewrite"])


StreamEventPayload = Annotated[
    ToolStarted | ToolFinished | ToolAvailability | DecisionEvent | VoteEvent | RewriteEvent | ReviewRequest,
    Field(discriminator="event"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(StreamEventPayload)


def parse_event(
    data: Any,
) -> ToolStarted | ToolFinished | ToolAvailability | DecisionEvent | VoteEvent | RewriteEvent | ReviewRequest:
    """A custom stream chunk (a dict) as its typed payload; raises pydantic's ValidationError otherwise."""
    return _ADAPTER.validate_python(data)


def emit(event: _Event) -> None:
    """Write ``event`` to the run's custom stream (nothing happens outside a run or with no listener)."""
    from langgraph.config import get_stream_writer

    try:
        writer = get_stream_writer()
    except RuntimeError:  # a node called directly, outside a run
        return
    writer(event.model_dump(mode="json"))
