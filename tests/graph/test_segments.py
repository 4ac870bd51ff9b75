"""Long audio routed segment by segment: the segmenting graph over the real routing graph and a real
SQLite checkpointer, on real concatenated speech, with scripted backends (the models' part is in
tests/graph/test_long_audio.py)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from doubles import CountingRewriter, ScriptedPolicy
from helpers import dev_flac, write_wav

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.audio import load_audio
from speech_hands.backends.composed import ComposedOmni
from speech_hands.types import Hypothesis, Reflection

UTTS = ["2609-156975-0007", "3331-159605-0008", "2033-164914-0008"]


class SpanASR:
    """Says which stretch of the input it was given ("<name> 12.3"), and records every input's length."""

    def __init__(self, name: str, *, fail_after_s: float | None = None) -> None:
        self.name = name
        self.fail_after_s = fail_after_s
        self.seen: list[float] = []
        self._lock = threading.Lock()

    def transcribe(self, audio, n_best: int = 5) -> list[Hypothesis]:
        with self._lock:
            self.seen.append(audio.samples.size / 16_000)
        start = audio.ref.start_s or 0.0
        if self.fail_after_s is not None and start >= self.fail_after_s:
            raise RuntimeError("out of memory (simulated)")
        return [Hypothesis(text=f"{self.name} {start:.1f}", score=-0.1 - 0.1 * i, source=self.name) for i in range(2)]


class DroppingASR(SpanASR):
    """Leaves out most words of segments over ``keeps_s`` seconds (as Whisper sometimes drops a sentence)."""

    def __init__(self, name: str, keeps_s: float | None) -> None:
        super().__init__(name)
        self.keeps_s = keeps_s

    def transcribe(self, audio, n_best: int = 5) -> list[Hypothesis]:
        top = super().transcribe(audio, n_best)[0]
        dropped = self.keeps_s is not None and audio.samples.size > self.keeps_s * 16_000
        text = top.text if dropped else top.text + " and every word of it" * 2
        return [top.model_copy(update={"text": text})]


class FallbackPolicy(ScriptedPolicy):
    """A policy that fell back to another one, as the learned reflector does on audio it cannot score."""

    def reflect(self, inp, sample: bool = False) -> Reflection:
        r = super().reflect(inp, sample)
        return r.model_copy(update={"policy": "mine(fallback:confidence)", "rationale": "could not score"})


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, shared_data):
    samples = np.concatenate([load_audio(dev_flac(u)).samples for u in UTTS])
    return write_wav(tmp_path_factory.mktemp("seg") / "long.wav", samples)


def make_agent(tmp_path, policy=None, internal=None, external=None, **config) -> SpeechHands:
    omni = ComposedOmni(internal or SpanASR("base"), policy or ScriptedPolicy([Action.EXTERNAL]), CountingRewriter())
    # the doubles answer two words per segment: the words-per-second check is off unless a test turns it on
    cfg = AgentConfig(trace_db=str(tmp_path / "traces.sqlite"), **{"min_words_per_speech_s": 0.0, **config})
    return SpeechHands(omni, [external or SpanASR("tiny")], config=cfg)


def test_segments_cover_the_input_in_order_and_each_is_routed_on_its_own(tmp_path, long_wav):
    internal, external = SpanASR("base"), SpanASR("tiny")
    with make_agent(tmp_path, internal=internal, external=external) as agent:
        result = agent.invoke(long_wav)
        trace = agent.trace(result.thread_id)
    duration = result.audio.duration_s
    segs = result.segments
    assert duration > 45 and len(segs) >= 3
    assert segs[0].start == 0 and segs[-1].end == pytest.approx(duration, abs=1e-3)
    assert all(a.end == b.start for a, b in itertools.pairwise(segs)) and [s.index for s in segs] == list(
        range(len(segs))
    )
    assert max(internal.seen) <= 20.0 and max(external.seen) <= 20.0  # no model sees more than a segment
    assert len(internal.seen) == len(segs) == len(external.seen)
    # the external edge on every segment: each segment's text is the tool's candidate for that stretch
    assert [s.text for s in segs] == [f"tiny {s.start:.1f}" for s in segs]
    assert result.answer == " ".join(s.text for s in segs)
    assert result.action is Action.EXTERNAL and all(s.action is Action.EXTERNAL for s in segs)
    assert all(s.reflection is not None and s.probs[Action.EXTERNAL] == 0.8 for s in segs)
    # the whole input's candidates: each tool's top-1s joined in order
    assert result.internal.top.text == " ".join(f"base {s.start:.1f}" for s in segs)
    # the trace: the segmenting graph's steps, then every segment's own route from its namespace
    assert trace.route == ["segment", *["route_segment"] * len(segs), "review", "stitch"]
    assert [t.index for t in trace.segments] == [s.index for s in segs]
    for seg_trace, seg in zip(trace.segments, segs):
        assert seg_trace.action is Action.EXTERNAL and seg_trace.checkpoint_ns == seg.checkpoint_ns
        assert seg_trace.route[:3] == ["prepare", "perceive", "perceive"] and seg_trace.route[-2:] == [
            "use_external",
            "finish",
        ]
    assert trace.result is not None and trace.result.answer == result.answer


def test_thirty_seconds_or_less_is_routed_whole(tmp_path, long_wav):
    short = write_wav(tmp_path / "short.wav", load_audio(long_wav).samples[: 16_000 * 29])
    internal = SpanASR("base")
    with make_agent(tmp_path, internal=internal) as agent:
        result = agent.invoke(short)
        trace = agent.trace(result.thread_id)
    assert internal.seen == [29.0]
    assert len(result.segments) == 1 and result.segments[0].checkpoint_ns is None
    assert result.segments[0].start == 0 and result.segments[0].end == 29.0
    assert result.reflection is not None and trace.route[0] == "prepare" and trace.segments == []


def test_stream_reports_every_segment_then_the_result(tmp_path, long_wav):
    with make_agent(tmp_path) as agent:
        events = list(agent.stream(long_wav))
    nodes = [e.node for e in events]
    assert nodes[0] == "segment" and nodes[-2:] == ["stitch", "result"]
    assert nodes.count("route_segment") == len(events[-1].result.segments)


def test_concurrent_segments_give_the_same_answer(tmp_path, long_wav):
    with make_agent(tmp_path) as agent:
        one = agent.invoke(long_wav)
    with make_agent(tmp_path, segment_concurrency=3) as agent:
        three = agent.invoke(long_wav)
    assert three.answer == one.answer and [s.action for s in three.segments] == [s.action for s in one.segments]


def test_a_tool_failing_on_some_segments_costs_only_its_candidates_there(tmp_path, long_wav):
    external = SpanASR("tiny", fail_after_s=20.0)
    with make_agent(tmp_path, external=external) as agent:
        result = agent.invoke(long_wav)
    failed = [s for s in result.segments if s.start >= 20.0]
    assert failed and all(s.text.startswith("base") and s.action is Action.INTERNAL for s in failed)
    assert any(n.startswith(f"segment {failed[0].index} (") and "tiny failed" in n for n in result.notes)
    assert result.externals[0].ok  # it still answered the first segment(s)


def test_a_policy_fallback_is_noted(tmp_path, long_wav):
    with make_agent(tmp_path, policy=FallbackPolicy([Action.INTERNAL])) as agent:
        result = agent.invoke(long_wav)
    notes = [n for n in result.notes if "reflection fell back (mine(fallback:confidence))" in n]
    assert len(notes) == len(result.segments)


def test_segment_length_is_a_setting(tmp_path, long_wav):
    internal = SpanASR("base")
    with make_agent(tmp_path, internal=internal, max_segment_s=10.0) as agent:
        result = agent.invoke(long_wav)
    assert max(internal.seen) <= 10.0 and len(result.segments) >= 5


def test_a_segment_missing_words_another_tool_heard_is_cut_and_routed_again(tmp_path, long_wav):
    internal, external = DroppingASR("base", keeps_s=9.0), DroppingASR("tiny", keeps_s=None)
    policy = ScriptedPolicy([Action.INTERNAL])
    with make_agent(tmp_path, internal=internal, external=external, policy=policy) as agent:
        result = agent.invoke(long_wav)
        trace = agent.trace(result.thread_id)
    segs = result.segments
    assert segs[0].start == 0 and segs[-1].end == pytest.approx(result.audio.duration_s, abs=1e-3)
    assert all(a.end == b.start for a, b in itertools.pairwise(segs)) and [s.index for s in segs] == list(
        range(len(segs))
    )
    cut = [n for n in result.notes if "cut at" in n and "routed again" in n]
    assert cut and all("the answer has 2 words where tiny heard 12" in n for n in cut)
    assert len(set(result.notes)) == len(result.notes)  # each segment is reviewed once
    # every part that was short enough to keep its words answers with them
    assert all(s.text.endswith("every word of it") for s in segs if s.duration <= 9.0)
    assert trace.route.count("review") >= 2 and [t.index for t in trace.segments] == [s.index for s in segs]


def test_a_segment_with_too_few_words_for_its_speech_is_cut_even_when_every_tool_agrees(tmp_path, long_wav):
    """Both tools answer two words for every segment (as when every model drops the same sentence): no tool
    heard more, but two words for over 8 s of speech is too few, so the segment is cut and routed again."""
    with make_agent(tmp_path, min_words_per_speech_s=1.2) as agent:
        result = agent.invoke(long_wav)
    with make_agent(tmp_path / "off") as agent:  # the check off (0): the segments are routed once
        unchecked = agent.invoke(long_wav)
    cut = [n for n in result.notes if "words for" in n and "s of speech" in n]
    assert cut and all("the answer has 2 words for" in n for n in cut)
    assert any("cut at" in n and "routed again" in n for n in cut)
    assert not any("s of speech" in n for n in unchecked.notes)
    assert len(result.segments) > len(unchecked.segments)
    segs = result.segments  # the halves still tile the input
    assert segs[0].start == 0 and segs[-1].end == pytest.approx(result.audio.duration_s, abs=1e-3)
    assert all(a.end == b.start for a, b in itertools.pairwise(segs))
