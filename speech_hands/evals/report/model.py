"""The typed result of an evaluation: :class:`EvalReport` and its rows, :class:`SystemScore`.

Kept apart from building, rendering and writing so that every consumer (the Markdown page, the
plots, ``report.json``, the CLI summary) depends on the data alone and not on each other; this
module imports nothing else of the report package.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from speech_hands.evals.routing import RoutingAnalysis
from speech_hands.metrics.qa import AccuracyRow
from speech_hands.metrics.significance import BootstrapInterval
from speech_hands.metrics.wer import ErrorCounts

__all__ = ["EvalReport", "SystemScore"]


class SystemScore(BaseModel):
    """One row of the systems table."""

    name: str
    kind: str = Field(description="pool (internal / external top-1), recorded, agent, oracle")
    wer: float | None = Field(default=None, description="ASR: corpus WER, 0..1")
    counts: ErrorCounts | None = None
    accuracy: float | None = Field(default=None, description="AudioQA: 0..1")
    per_category: list[AccuracyRow] = Field(default_factory=list)
    items: int = 0


class EvalReport(BaseModel):
    """One run's evaluation: the systems table (overall and per dataset), the headline numbers against
    the best single system and the oracle router, and the routing analysis; ``report.json`` is its dump."""

    name: str
    created: str
    run_settings: dict = Field(
        default_factory=dict, description="how the agent was run (the run folder's run.json): models, policy, reflector"
    )
    task: str
    items: int
    failed_items: int = Field(description="items that could not be run (bad audio, ...): counted, not dropped")
    skipped_items: int = Field(description="items the agent skipped (silent audio, every tool failed)")
    normalizer: str
    unit: str
    label_rule: str
    systems: list[SystemScore]
    per_dataset: dict[str, list[SystemScore]] = Field(default_factory=dict)
    best_single: str | None = None
    relative_reduction: float | None = Field(
        default=None, description="ASR: 1 - agent WER / best single WER (the paper's -12.1% is 0.121)"
    )
    gap_closed: float | None = None
    reduction_intervals: list[BootstrapInterval] = Field(
        default_factory=list,
        description="ASR: paired bootstrap of the relative reduction vs the best single system (items; speakers)",
    )
    routing: RoutingAnalysis
    actions: dict[str, int] = Field(default_factory=dict, description="where final answers came from")
    mean_rewrites: float = 0.0
    seconds_per_item: float = 0.0
    failures: list[str] = Field(default_factory=list, description="id: error, for failed items")

    def system(self, name: str) -> SystemScore:
        return next(s for s in self.systems if s.name == name)
