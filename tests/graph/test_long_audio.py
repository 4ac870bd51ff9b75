"""The default agent (real Whisper base + tiny.en, the shipped learned reflector) on long real speech:
three dev utterances concatenated (44 s), routed segment by segment."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from helpers import dev_flac, write_wav

from speech_hands import SpeechHands
from speech_hands.audio import load_audio
from speech_hands.formats import to_srt, to_vtt
from speech_hands.metrics.wer import longest_deletion_run, normalize_for, word_errors

UTTS = ["2609-156975-0007", "2033-164914-0008", "1688-142285-0007"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("long")
    path = write_wav(folder / "long.wav", np.concatenate([load_audio(dev_flac(u)).samples for u in UTTS]))
    with SpeechHands.default(trace_db=str(folder / "traces.sqlite")) as agent:
        result = agent.invoke(path)
        trace = agent.trace(result.thread_id)
    return result, trace


def test_segments_are_in_order_do_not_overlap_and_cover_the_audio(run):
    result, _ = run
    segs = result.segments
    assert result.audio.duration_s > 30 and len(segs) >= 3
    assert segs[0].start == 0.0 and segs[-1].end == pytest.approx(result.audio.duration_s, abs=1e-3)
    assert all(a.start < a.end == b.start < b.end for a, b in itertools.pairwise(segs))
    assert all(s.duration <= 20.0 for s in segs)


def test_the_learned_reflector_decides_every_segment_with_no_fallback(run):
    result, _ = run
    for seg in result.segments:
        assert seg.action is not None and seg.reflection is not None
        assert seg.reflection.policy == "learned-reflector", seg.reflection.policy
        assert sum(seg.probs.values()) == pytest.approx(1.0)
        assert {o.role for o in seg.candidates} == {"internal", "external"} and all(o.ok for o in seg.candidates)
    assert not any("fell back" in n for n in result.notes), result.notes
    assert result.action in {s.action for s in result.segments}


def test_no_sentence_is_lost(run, dev_references):
    result, _ = run
    reference = " ".join(dev_references[u] for u in UTTS)
    counts = word_errors(reference, result.answer)  # proper names (Nuzhat al Zaman) cost substitutions
    assert counts.wer < 0.25 and counts.deletions <= 5
    assert longest_deletion_run(reference, result.answer) <= 3
    answer = set(normalize_for(result.answer).split())
    for uid in UTTS:  # most words of every utterance are in the answer
        words = normalize_for(dev_references[uid]).split()
        assert sum(w in answer for w in words) / len(words) > 0.7, uid
    assert result.answer == " ".join(s.text for s in result.segments)


def test_the_trace_shows_the_action_of_every_segment(run):
    result, trace = run
    assert trace.route[0] == "segment" and trace.route[-2:] == ["review", "stitch"]
    assert trace.route.count("route_segment") >= len(result.segments)  # more when a segment was cut again
    assert [(t.index, t.action) for t in trace.segments] == [(s.index, s.action) for s in result.segments]
    for seg_trace in trace.segments:
        assert {"prepare", "perceive", "gather", "reflect", "vote", "finish"} <= set(seg_trace.route)
        assert f"use_{seg_trace.action.value}" in seg_trace.route or "rewrite" in seg_trace.route


def test_subtitles_have_one_well_formed_cue_per_segment(run):
    result, _ = run
    srt = to_srt(result).strip().split("\n\n")
    assert len(srt) == len(result.segments)
    stamp = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"
    ends = []
    for n, (block, seg) in enumerate(zip(srt, result.segments), start=1):
        number, timing, text = block.split("\n")
        assert number == str(n) and text == seg.text
        m = re.fullmatch(f"{stamp} --> {stamp}", timing)
        assert m, timing
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, m.groups())
        start, end = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        assert start == pytest.approx(seg.start, abs=1e-3) and end == pytest.approx(seg.end, abs=1e-3)
        ends.append((start, end))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends))
    vtt = to_vtt(result)
    assert vtt.startswith("WEBVTT\n\n")
    assert len(re.findall(rf"^{stamp} --> {stamp}$", vtt, re.M)) == len(result.segments)
