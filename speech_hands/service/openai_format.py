"""An :class:`~speech_hands.types.AgentResult` as a service response: OpenAI's transcription formats
(json, text, srt, vtt, verbose_json) and the ``/v1/process`` contract.

Usage::

    body, media_type = transcription_body(result, "verbose_json", language="en")
    response = process_response(result)
"""

from __future__ import annotations

from typing import Any

from speech_hands.formats import to_srt, to_vtt
from speech_hands.service.schemas import (
    Candidate,
    ProcessResponse,
    Transcription,
    VerboseSegment,
    VerboseTranscription,
)
from speech_hands.types import Action, AgentResult, ToolOutput

__all__ = ["candidates", "probs", "process_response", "transcription_body"]


def probs(values: dict[Action, float] | None) -> dict[str, float] | None:
    """``{"internal": p, "external": p, "rewrite": p}`` (None: no decision was made)."""
    return {a.value: float(p) for a, p in values.items()} if values else None


def candidates(outputs: list[ToolOutput]) -> list[Candidate]:
    return [
        Candidate(
            tool=o.tool,
            role=o.role,
            hypotheses=[h.text for h in o.hypotheses],
            scores=[h.score for h in o.hypotheses],
            error=f"{o.error.type}: {o.error.message}" if o.error else None,
        )
        for o in outputs
    ]


def verbose(result: AgentResult, language: str) -> VerboseTranscription:
    segments = [
        VerboseSegment(
            id=i,
            start=s.start,
            end=s.end,
            text=s.text,
            action=s.action.value if s.action else None,
            probs=probs(s.probs),
        )
        for i, s in enumerate(result.segments)
    ]
    return VerboseTranscription(
        language=language,
        duration=result.audio.duration_s,
        text=result.answer,
        segments=segments,
        action=result.action.value if result.action else None,
        probs=probs(result.reflection.probs if result.reflection else None),
        candidates=candidates(result.candidates),
        thread_id=result.thread_id,
        notes=list(result.notes),
        skipped_reason=result.skipped_reason,
    )


def transcription_body(result: AgentResult, fmt: str, *, language: str = "en") -> tuple[Any, str]:
    """The response body (a model for the JSON formats, a string otherwise) and its media type."""
    if fmt == "json":
        return Transcription(text=result.answer), "application/json"
    if fmt == "verbose_json":
        return verbose(result, language), "application/json"
    if fmt == "text":
        return result.answer.strip() + "\n", "text/plain; charset=utf-8"
    if fmt == "srt":
        return to_srt(result), "application/x-subrip; charset=utf-8"
    if fmt == "vtt":
        return to_vtt(result), "text/vtt; charset=utf-8"
    raise ValueError(f"unknown response_format {fmt!r}")


def process_response(result: AgentResult) -> ProcessResponse:
    """The ``/v1/process`` answer: the first decision's token and probabilities, the final answer."""
    first = result.reflection
    chosen = first.probs.get(first.action) if first is not None else None
    internal = result.internal
    return ProcessResponse(
        action_token=first.action.token if first is not None else None,
        final_answer=result.answer,
        internal_prediction=internal.hypotheses[0].text if internal and internal.hypotheses else None,
        routing_confidence=float(chosen) if chosen is not None else None,
        probs=probs(first.probs if first is not None else None),
        thread_id=result.thread_id,
        candidates=candidates(result.candidates),
        notes=list(result.notes),
    )
