"""Per-run settings of the graphs, passed through LangGraph's ``context_schema``.

:class:`RunContext` is the graphs' ``context_schema``: ``graph.invoke(inputs, config, context=...)``
(or ``SpeechHands.invoke(..., context=...)``, or the ``context`` of a LangGraph server run) changes
how ONE run behaves without rebuilding the agent. Every field left ``None`` keeps the agent's own
setting (:class:`speech_hands.config.AgentConfig`, held in the compiled graph as
:class:`speech_hands.graphs.routing.RoutingSettings`)::

    agent.invoke("a.flac", context={"n_best": 3, "max_rewrites": 0})
    agent.invoke("a.flac", context=RunContext(interrupt_on=("rewrite",)))   # a person confirms rewrites

Nodes and edges read it with :func:`run_settings`, which falls back to the agent's settings outside a
run (a node called directly in a test) or when no context was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from speech_hands.types import Action

if TYPE_CHECKING:
    from speech_hands.graphs.routing import RoutingSettings


class RunContext(BaseModel):
    """Per-run overrides (LangGraph ``context_schema``); ``None`` keeps the agent's setting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_best: int | None = Field(default=None, ge=1, le=32, description="hypotheses requested from each ASR tool")
    k_samples: int | None = Field(default=None, ge=1, le=64, description="reflection draws (>1: majority vote)")
    max_rewrites: int | None = Field(default=None, ge=0, le=8, description="bound of the rewrite -> reflect loop")
    interrupt_on: tuple[Action, ...] | None = Field(
        default=None,
        description="ask a person (LangGraph interrupt) before following these actions' edges, e.g. ['rewrite']",
    )
    interrupt_below: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="ask a person before following a decision whose action probability is below this",
    )

    def apply(self, settings: RoutingSettings) -> RoutingSettings:
        """``settings`` with this context's fields that are set."""
        changes = {k: v for k, v in self.model_dump(exclude_none=True).items()}
        if "interrupt_on" in changes:
            changes["interrupt_on"] = tuple(Action(a) for a in changes["interrupt_on"])
        return replace(settings, **changes) if changes else settings


def as_context(value: RunContext | Mapping[str, Any] | None) -> RunContext | None:
    """A :class:`RunContext` from a context object or a plain mapping (None stays None)."""
    if value is None or isinstance(value, RunContext):
        return value
    return RunContext.model_validate(dict(value))


def run_settings(base: RoutingSettings) -> RoutingSettings:
    """The settings of the run in progress: ``base`` with the run's :class:`RunContext` applied."""
    from langgraph.runtime import get_runtime

    try:
        runtime = get_runtime()
    except RuntimeError:  # not inside a run (a node called directly)
        return base
    context = getattr(runtime, "context", None) if runtime is not None else None
    if context is None or not isinstance(context, (RunContext, Mapping)):
        return base
    found = as_context(context)
    return found.apply(base) if found is not None else base
