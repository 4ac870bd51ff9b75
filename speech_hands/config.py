"""Agent settings: plain data, validated once, shared by the Python API and the CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from speech_hands.audio import MAX_DURATION_S, SEGMENT_S
from speech_hands.checkpointing import MEMORY, resolve_location
from speech_hands.types import Action

__all__ = ["MEMORY", "AgentConfig", "default_trace_db"]


def default_trace_db() -> Path:
    """Where traces go unless told otherwise: ``$SPEECH_HANDS_TRACE_DB``, else
    ``$SPEECH_HANDS_HOME/traces.sqlite``, else ``~/.cache/speech_hands/traces.sqlite``."""
    if env := os.environ.get("SPEECH_HANDS_TRACE_DB"):
        return Path(env).expanduser()
    home = os.environ.get("SPEECH_HANDS_HOME") or os.environ.get("SPEECH_HANDS_CACHE")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "speech_hands"
    return base / "traces.sqlite"


class FailoverConfig(BaseModel):
    """When an external perception tool is taken out of routing and when it is tried again
    (:mod:`speech_hands.graphs.availability`; the internal model is never taken out: docs/failover.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_failures: int | None = Field(
        default=3,
        ge=1,
        le=1000,
        description="consecutive failed calls (raised, timed out, or only implausible candidates) that mark an "
        "external tool unavailable; None: never",
    )
    probe_interval_s: float = Field(
        default=30.0, gt=0, le=86_400, description="seconds after which an unavailable tool is called again (probe)"
    )
    probe_backoff: float = Field(
        default=2.0, ge=1.0, le=10.0, description="the probe interval is multiplied by this after each failed probe"
    )
    max_probe_interval_s: float = Field(
        default=600.0, gt=0, le=86_400, description="the longest probe interval the backoff reaches"
    )

    @model_validator(mode="after")
    def _ordered(self) -> FailoverConfig:
        if self.max_probe_interval_s < self.probe_interval_s:
            raise ValueError(
                f"max_probe_interval_s ({self.max_probe_interval_s}) must be at least probe_interval_s "
                f"({self.probe_interval_s})"
            )
        return self


class AgentConfig(BaseModel):
    """How the routing graph behaves. Every field has a safe default."""

    model_config = ConfigDict(extra="forbid")

    n_best: int = Field(default=5, ge=1, le=32, description="hypotheses requested from each ASR tool")
    k_samples: int = Field(
        default=1, ge=1, le=64, description="reflection draws; >1 turns on majority sampling (vote node)"
    )
    max_rewrites: int = Field(default=1, ge=0, le=8, description="bound of the rewrite -> reflect loop")
    weighted_vote: bool = Field(default=True, description="weight majority votes by action probability")
    tool_timeout_s: float | None = Field(default=300.0, gt=0, description="per-tool time limit (None: none)")
    seed: int = Field(default=0, description="seed for majority-sampling draws")
    max_audio_s: float = Field(default=MAX_DURATION_S, gt=0, description="longest accepted input, seconds")
    max_segment_s: float = Field(
        default=SEGMENT_S,
        ge=5.0,
        le=30.0,
        description="speech recognition over 30 s: the longest segment long audio is cut into (each is routed on "
        "its own); 30 s or less is routed whole",
    )
    segment_concurrency: int = Field(
        default=1, ge=1, le=16, description="segments of long audio routed at the same time (memory grows with it)"
    )
    min_words_per_speech_s: float = Field(
        default=1.2,
        ge=0.0,
        le=3.0,
        description="long audio: a segment whose answer has fewer words per second of detected speech (over 8 s "
        "of speech or more) is cut in two and routed again; 0 turns the check off",
    )
    trace_db: str | None = Field(
        default=None,
        description="the checkpointer (traces): a SQLite file, a postgresql:// URL (extra 'postgres'; several "
        "processes can share it), ':memory:' (this process only); None: the default SQLite path",
    )
    detect_speech: bool = Field(
        default=True,
        description="speech recognition: skip perception when voice-activity detection finds no speech",
    )
    interrupt_on: list[Action] = Field(
        default_factory=list,
        description="ask a person (LangGraph interrupt) before following these actions' edges, e.g. ['rewrite']; "
        "resume with SpeechHands.resume(thread_id, action=None | 'internal' | 'external' | 'rewrite')",
    )
    interrupt_below: float | None = Field(
        default=None, ge=0.0, le=1.0, description="ask a person when P(decided action) is below this"
    )
    perception_cache: Literal["none", "memory", "sqlite"] = Field(
        default="none",
        description="LangGraph node cache of perception, keyed on (tool, audio sha256, question, n_best): 'memory' "
        "(this process) or 'sqlite' (next to the trace database); the same audio is then not perceived again",
    )
    retry_attempts: int = Field(
        default=3, ge=1, le=10, description="attempts of a node calling a remote backend on connection errors"
    )
    failover: FailoverConfig = Field(
        default_factory=FailoverConfig,
        description="failover of external tools: marked unavailable after consecutive failures, probed again later",
    )
    otel: bool = Field(
        default=False,
        description="OpenTelemetry spans per run (extra 'otel'; exporter from the OTEL_* variables); "
        "also on with SPEECH_HANDS_OTEL=1",
    )
    max_workers: int | None = Field(
        default=None,
        ge=1,
        deprecated="unused: every tool call runs in its own thread, and a tool that hangs is isolated",
        description="unused (kept so older configurations still load)",
    )

    def resolved_trace_db(self) -> str:
        """The checkpointer location to open (:func:`speech_hands.checkpointing.resolve_location`)."""
        return resolve_location(self.trace_db, default_trace_db)
