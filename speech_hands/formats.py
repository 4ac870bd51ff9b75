"""A result as a document: plain text, JSON, SubRip (``.srt``) or WebVTT (``.vtt``).

Subtitles have one cue per segment with text (:attr:`speech_hands.types.AgentResult.segments`: the
segments long audio was routed in, or one segment covering a short input), timed by the segment's
start and end. Segments that were skipped (no speech) or came out empty have no cue.
"""

from __future__ import annotations

from speech_hands.types import AgentResult, Segment

__all__ = ["FORMATS", "SUFFIXES", "render", "timestamp", "to_srt", "to_txt", "to_vtt"]

#: The formats :func:`render` writes, and the file suffix of each.
FORMATS: tuple[str, ...] = ("txt", "json", "srt", "vtt")
SUFFIXES: dict[str, str] = {"txt": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}


def timestamp(seconds: float, *, decimal: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SubRip) or, with ``decimal="."``, ``HH:MM:SS.mmm`` (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cues(result: AgentResult) -> list[tuple[float, float, str]]:
    cues = []
    for segment in result.segments:
        text = " ".join(segment.text.split())  # one line: no blank line can end the cue early
        if text:
            cues.append((segment.start, max(segment.end, segment.start + 0.001), text))
    return cues


def to_txt(result: AgentResult) -> str:
    """The answer, one line."""
    return result.answer.strip() + "\n"


def to_srt(result: AgentResult) -> str:
    """SubRip: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line after each."""
    blocks = [
        f"{n}\n{timestamp(start)} --> {timestamp(end)}\n{text}\n"
        for n, (start, end, text) in enumerate(_cues(result), start=1)
    ]
    return "\n".join(blocks)


def _vtt_text(text: str) -> str:
    """Cue text WebVTT can carry: ``&`` and ``<`` escaped, no ``-->``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(result: AgentResult) -> str:
    """WebVTT: the ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues."""
    blocks = [
        f"{timestamp(start, decimal='.')} --> {timestamp(end, decimal='.')}\n{_vtt_text(text)}\n"
        for start, end, text in _cues(result)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def render(result: AgentResult, fmt: str) -> str:
    """``result`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "txt":
        return to_txt(result)
    if fmt == "json":
        return result.model_dump_json(indent=2) + "\n"
    if fmt == "srt":
        return to_srt(result)
    if fmt == "vtt":
        return to_vtt(result)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def segment_line(segment: Segment) -> str:
    """``[start --> end] text`` (the text format of one segment, for logs and terminals)."""
    return f"[{timestamp(segment.start, decimal='.')} --> {timestamp(segment.end, decimal='.')}] {segment.text}"
