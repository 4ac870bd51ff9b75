"""The service's request and response models (pydantic at the HTTP boundary).

OpenAI's shapes (:class:`Transcription`, :class:`VerboseTranscription`, :class:`ModelList`, errors)
follow the OpenAI API reference, so OpenAI clients parse them; the verbose transcription adds the
method's fields (the action, its probabilities, every tool's candidates). :class:`ProcessRequest` /
:class:`ProcessResponse` are the Speech-Hands authors' contract (``/v1/process``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from speech_hands.graphs.availability import ToolStatus

__all__ = [
    "Candidate",
    "Health",
    "ModelCard",
    "ModelList",
    "ProcessRequest",
    "ProcessResponse",
    "ResponseFormat",
    "Transcription",
    "VerboseSegment",
    "VerboseTranscription",
]

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json")


class Transcription(BaseModel):
    """``response_format=json``."""

    text: str


class Candidate(BaseModel):
    """One tool's output: its N-best (best first) or its error."""

    tool: str
    role: str
    hypotheses: list[str]
    scores: list[float | None]
    error: str | None = None


class VerboseSegment(BaseModel):
    """One segment in OpenAI's shape, plus the action that chose its text and the action probabilities."""

    id: int
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    action: str | None
    probs: dict[str, float] | None = None


class VerboseTranscription(BaseModel):
    """``response_format=verbose_json``: OpenAI's fields, then the method's."""

    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment]
    action: str | None = Field(description="internal / external / rewrite (None: the input was skipped)")
    probs: dict[str, float] | None = Field(description="P(internal), P(external), P(rewrite) of the first decision")
    candidates: list[Candidate]
    thread_id: str
    notes: list[str]
    skipped_reason: str | None = None


class ProcessRequest(BaseModel):
    """``POST /v1/process`` as JSON (multipart sends the same fields, the audio as ``file``)."""

    model_config = ConfigDict(extra="forbid")

    audio_b64: str = Field(description="the audio file's bytes as base64 (a data: URL prefix is allowed)")
    task: Literal["transcribe", "qa"] = "transcribe"
    question: str | None = Field(default=None, description="the question (task=qa)")
    external_prediction: str | None = Field(default=None, description="the caller's external 1-best")
    external_nbest: list[str] | None = Field(
        default=None, description="the caller's external N-best, best first (wins over external_prediction)"
    )


class ProcessResponse(BaseModel):
    """The Speech-Hands contract's answer."""

    action_token: str | None = Field(description='the first-token action, e.g. "<internal>"')
    final_answer: str
    internal_prediction: str | None
    routing_confidence: float | None = Field(description="P of the chosen action")
    probs: dict[str, float] | None
    thread_id: str
    candidates: list[Candidate]
    notes: list[str]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "speech-hands"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    """``GET /healthz``: always 200 while the process serves; ``degraded`` when failover took an external
    tool out of routing (requests are still answered, by the other tools)."""

    status: Literal["ok", "degraded"] = "ok"
    model: str
    models_loaded: bool
    tools: list[str]
    in_flight: int
    tool_status: list[ToolStatus] = Field(default_factory=list, description="each tool's availability (failover)")
    unavailable: list[str] = Field(default_factory=list, description="external tools out of routing now")
    details: dict[str, Any] = Field(default_factory=dict)
