"""The document writers (txt, json, srt, vtt) on results built by hand."""

from __future__ import annotations

import json

import pytest

from speech_hands.formats import render, timestamp, to_srt, to_vtt
from speech_hands.types import Action, AgentResult, AudioRef, Segment


def _result(*segments: Segment) -> AgentResult:
    return AgentResult(
        answer=" ".join(s.text for s in segments if s.text),
        action=Action.INTERNAL,
        audio=AudioRef(id="x", duration_s=segments[-1].end),
        segments=list(segments),
        thread_id="t",
    )


def test_timestamps():
    assert timestamp(0) == "00:00:00,000"
    assert timestamp(3723.4567) == "01:02:03,457"
    assert timestamp(59.9996, decimal=".") == "00:01:00.000"


def test_srt_numbers_cues_and_skips_empty_segments():
    result = _result(
        Segment(index=0, start=0.0, end=12.5, text="first part.", action=Action.INTERNAL),
        Segment(index=1, start=12.5, end=20.0, text="", action=None, skipped_reason="no speech"),
        Segment(index=2, start=20.0, end=31.25, text="second\n\npart", action=Action.REWRITE),
    )
    assert to_srt(result) == (
        "1\n00:00:00,000 --> 00:00:12,500\nfirst part.\n\n2\n00:00:20,000 --> 00:00:31,250\nsecond part\n"
    )


def test_vtt_has_its_header_and_escapes_markup():
    result = _result(Segment(index=0, start=1.0, end=2.0, text="a <b> & c --> d", action=Action.EXTERNAL))
    assert to_vtt(result) == "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\na &lt;b&gt; &amp; c --&gt; d\n"


def test_txt_and_json():
    result = _result(Segment(index=0, start=0.0, end=2.0, text="hello there", action=Action.INTERNAL))
    assert render(result, "txt") == "hello there\n"
    assert json.loads(render(result, "json"))["segments"][0]["text"] == "hello there"
    with pytest.raises(ValueError, match="unknown format"):
        render(result, "docx")
