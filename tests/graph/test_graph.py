"""The routing state machine: each edge, the rewrite bound, majority voting, parallel perception,
failing tools, and traces read back from a real SQLite checkpointer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from doubles import (
    CountingRewriter,
    FailingASR,
    FailingPolicy,
    FailingRewriter,
    FixedASR,
    SampledPolicy,
    ScriptedPolicy,
)
from helpers import write_wav

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni

INTERNAL_TEXT = ["the cat sat on the mat", "the cat sat on a mat"]
EXTERNAL_TEXT = ["the cat sat on the hat", "a cat sat on the hat"]


@pytest.fixture()
def speech_like(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    return write_wav(
        tmp_path / "tone.wav",
        (0.2 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
    )


def make_agent(policy, *, tmp_path: Path, rewriter=None, externals=None, **config) -> SpeechHands:
    internal = FixedASR("internal-asr", INTERNAL_TEXT)
    omni = ComposedOmni(internal, policy, rewriter or CountingRewriter())
    externals = externals if externals is not None else [FixedASR("external-asr", EXTERNAL_TEXT)]
    cfg = AgentConfig(trace_db=str(tmp_path / "traces.sqlite"), **config)
    return SpeechHands(omni, externals, config=cfg)


def test_internal_edge_returns_own_prediction(tmp_path, speech_like):
    with make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path=tmp_path) as agent:
        result = agent.invoke(speech_like)
    assert result.action is Action.INTERNAL
    assert result.answer == INTERNAL_TEXT[0]
    assert result.rewrite_count == 0
    assert [t.node for t in result.timings if t.node in ("use_internal", "use_external", "rewrite")] == ["use_internal"]


def test_external_edge_accepts_tool_top_candidate(tmp_path, speech_like):
    with make_agent(ScriptedPolicy([Action.EXTERNAL]), tmp_path=tmp_path) as agent:
        result = agent.invoke(speech_like)
    assert result.action is Action.EXTERNAL
    assert result.answer == EXTERNAL_TEXT[0]
    assert result.reflection is not None and result.reflection.external_tool == "external-asr"


def test_rewrite_edge_then_reflection_accepts_rewrite(tmp_path, speech_like):
    policy = ScriptedPolicy([Action.REWRITE, Action.INTERNAL])
    with make_agent(policy, tmp_path=tmp_path, max_rewrites=3) as agent:
        result = agent.invoke(speech_like)
    assert result.action is Action.REWRITE
    assert result.answer == "rewrite 1"
    assert result.rewrite_count == 1
    assert [r.action for r in result.reflections] == [Action.REWRITE, Action.INTERNAL]
    # the second reflection saw the rewrite as the model's own current answer
    second = policy.calls[-1]
    assert second.round == 1 and second.internal.top.text == "rewrite 1"
    assert second.original_internal.top.text == INTERNAL_TEXT[0]


@pytest.mark.parametrize("k", [1, 3])
def test_a_reflection_model_that_raises_keeps_the_internal_prediction(tmp_path, speech_like, k):
    with make_agent(FailingPolicy(), tmp_path=tmp_path, k_samples=k) as agent:
        result = agent.invoke(speech_like)
        history = agent.trace(result.thread_id)
    assert result.action is Action.INTERNAL and result.answer == INTERNAL_TEXT[0]
    assert result.reflection is not None and result.reflection.policy.startswith("fallback:reflection-failed")
    draws = result.samples if k > 1 else [result.reflection]
    assert all("CUDA out of memory" in (d.rationale or "") for d in draws)
    assert len([n for n in result.notes if "reflection failed (RuntimeError" in n]) == k
    assert {c.tool for c in result.candidates if c.ok} == {"internal-asr", "external-asr"}  # nothing lost
    assert history.result.answer == result.answer  # the fallback is in the checkpointed trace


@pytest.mark.parametrize("ok", [0, 1])
def test_a_rewrite_that_raises_keeps_the_latest_internal_answer(tmp_path, speech_like, ok):
    rewriter = FailingRewriter(ok=ok)
    with make_agent(ScriptedPolicy([Action.REWRITE]), tmp_path=tmp_path, rewriter=rewriter, max_rewrites=3) as agent:
        result = agent.invoke(speech_like)
    assert rewriter.calls == ok + 1  # the failure ends the loop: no retry
    assert result.rewrite_count == ok
    if ok:  # the first rewrite stands
        assert (result.action, result.answer) == (Action.REWRITE, "rewrite 1")
    else:
        assert (result.action, result.answer) == (Action.INTERNAL, INTERNAL_TEXT[0])
    assert any("rewrite failed (TimeoutError: rewrite model did not answer)" in n for n in result.notes)
    assert not any("budget" in n or "disabled" in n for n in result.notes)


@pytest.mark.parametrize("max_rewrites", [1, 2, 3])
def test_rewrite_loop_is_bounded(tmp_path, speech_like, max_rewrites):
    rewriter = CountingRewriter()
    with make_agent(
        ScriptedPolicy([Action.REWRITE]), tmp_path=tmp_path, rewriter=rewriter, max_rewrites=max_rewrites
    ) as agent:
        result = agent.invoke(speech_like)
    assert rewriter.calls == max_rewrites
    assert result.rewrite_count == max_rewrites
    assert result.answer == f"rewrite {max_rewrites}"
    assert result.action is Action.REWRITE
    assert len(result.reflections) == max_rewrites + 1
    assert any("budget" in note for note in result.notes)


def test_rewrite_disabled_falls_back_to_more_probable_side(tmp_path, speech_like):
    probs = {Action.INTERNAL: 0.1, Action.EXTERNAL: 0.3, Action.REWRITE: 0.6}
    with make_agent(ScriptedPolicy([Action.REWRITE], probs=probs), tmp_path=tmp_path, max_rewrites=0) as agent:
        result = agent.invoke(speech_like)
    assert result.rewrite_count == 0
    assert result.action is Action.EXTERNAL and result.answer == EXTERNAL_TEXT[0]


def test_majority_vote_over_parallel_draws(tmp_path, speech_like):
    draws = [
        (Action.EXTERNAL, EXTERNAL_TEXT[0], 0.6),
        (Action.INTERNAL, INTERNAL_TEXT[0], 0.9),
        (Action.EXTERNAL, EXTERNAL_TEXT[0], 0.5),
        (Action.INTERNAL, INTERNAL_TEXT[0], 0.7),
        (Action.EXTERNAL, EXTERNAL_TEXT[0], 0.55),
    ]
    with make_agent(SampledPolicy(draws), tmp_path=tmp_path, k_samples=5, weighted_vote=False) as agent:
        result = agent.invoke(speech_like)
    assert len(result.samples) == 5
    assert sorted(s.sample_index for s in result.samples) == [0, 1, 2, 3, 4]
    # unweighted: 3 external votes beat 2 internal ones
    assert result.action is Action.EXTERNAL and result.answer == EXTERNAL_TEXT[0]
    with make_agent(SampledPolicy(draws), tmp_path=tmp_path, k_samples=5, weighted_vote=True) as agent:
        weighted = agent.invoke(speech_like)
    # weighted: internal 0.9 + 0.7 = 1.6 vs external 0.6 + 0.5 + 0.55 = 1.65 -> external still wins
    assert weighted.action is Action.EXTERNAL


def test_majority_vote_tie_goes_to_internal(tmp_path, speech_like):
    draws = [(Action.EXTERNAL, EXTERNAL_TEXT[0], 0.8), (Action.INTERNAL, INTERNAL_TEXT[0], 0.8)]
    with make_agent(SampledPolicy(draws), tmp_path=tmp_path, k_samples=2) as agent:
        result = agent.invoke(speech_like)
    assert result.action is Action.INTERNAL and result.answer == INTERNAL_TEXT[0]


def test_perception_tools_run_concurrently(tmp_path, speech_like):
    slow = [FixedASR(f"slow-{i}", EXTERNAL_TEXT, delay_s=0.5) for i in range(3)]
    with make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path=tmp_path, externals=slow) as agent:
        result = agent.invoke(speech_like)
    intervals = [iv for tool in slow for iv in tool.intervals]
    latest_start = max(start for start, _ in intervals)
    earliest_end = min(end for _, end in intervals)
    assert latest_start < earliest_end, "the three tools should overlap in time"
    assert result.timing("perceive") >= 1.5  # summed over branches
    wall = max(t.started_at + t.elapsed_s for t in result.timings) - min(t.started_at for t in result.timings)
    assert wall < 1.2, f"sequential would take >= 1.5 s, took {wall:.2f} s"


def test_failing_tool_is_traced_and_route_proceeds(tmp_path, speech_like):
    externals = [FailingASR(), FixedASR("external-asr", EXTERNAL_TEXT)]
    with make_agent(ScriptedPolicy([Action.EXTERNAL]), tmp_path=tmp_path, externals=externals) as agent:
        result = agent.invoke(speech_like)
    failed = {o.tool: o.error for o in result.failed_tools}
    assert "broken-asr" in failed and "out of memory" in failed["broken-asr"].message
    assert any("broken-asr failed" in n for n in result.notes)
    assert result.answer == EXTERNAL_TEXT[0]


def test_tool_timeout_is_traced(tmp_path, speech_like):
    externals = [FixedASR("hanging-asr", EXTERNAL_TEXT, delay_s=3.0), FixedASR("external-asr", EXTERNAL_TEXT)]
    with make_agent(
        ScriptedPolicy([Action.INTERNAL]), tmp_path=tmp_path, externals=externals, tool_timeout_s=0.3
    ) as agent:
        result = agent.invoke(speech_like)
    hanging = next(o for o in result.candidates if o.tool == "hanging-asr")
    assert hanging.error is not None and hanging.error.timed_out
    assert result.answer == INTERNAL_TEXT[0]


def test_all_tools_failing_gives_skipped_result(tmp_path, speech_like):
    omni = ComposedOmni(FailingASR("internal-broken"), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    cfg = AgentConfig(trace_db=str(tmp_path / "t.sqlite"))
    with SpeechHands(omni, [FailingASR("external-broken")], config=cfg) as agent:
        result = agent.invoke(speech_like)
    assert result.action is None and result.answer == ""
    assert "internal-broken" in result.skipped_reason and "external-broken" in result.skipped_reason


def test_trace_read_back_from_sqlite_in_a_new_agent(tmp_path, speech_like):
    db = tmp_path / "traces.sqlite"
    with make_agent(ScriptedPolicy([Action.REWRITE, Action.INTERNAL]), tmp_path=tmp_path) as agent:
        result = agent.invoke(speech_like, thread_id="thread-42")
    # the file is a real SQLite database with LangGraph's checkpoint tables
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"checkpoints", "writes"} <= tables
    # a fresh agent (new process state, no cache) reads the same decision history
    with make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path=tmp_path) as other:
        trace = other.trace("thread-42")
        again = other.result("thread-42")
    assert trace.result is not None and trace.result.answer == result.answer == again.answer
    assert trace.route.count("perceive") == 2
    assert trace.route[:2] == ["prepare", "perceive"]
    assert "rewrite" in trace.route and trace.route[-1] == "finish"
    assert trace.route.index("rewrite") < len(trace.route) - 1 - trace.route[::-1].index("reflect")
    assert again.checkpoint_id == result.checkpoint_id


def test_stream_yields_node_updates_then_result(tmp_path, speech_like):
    with make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path=tmp_path) as agent:
        events = list(agent.stream(speech_like))
    nodes = [e.node for e in events]
    assert nodes[0] == "prepare" and nodes.count("perceive") == 2
    assert nodes[-1] == "result" and events[-1].result.answer == INTERNAL_TEXT[0]


def test_ainvoke_and_batch(tmp_path, speech_like):
    import asyncio

    with make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path=tmp_path) as agent:
        result = asyncio.run(agent.ainvoke(speech_like))
        assert result.answer == INTERNAL_TEXT[0]
        seen = []
        results = agent.batch(
            [speech_like, tmp_path / "missing.wav"], return_exceptions=True, on_result=lambda i, r: seen.append(i)
        )
    assert sorted(seen) == [0, 1]
    assert results[0].answer == INTERNAL_TEXT[0]
    assert "not found" in str(results[1])


def test_reused_thread_starts_a_fresh_decision(tmp_path, speech_like):
    with make_agent(ScriptedPolicy([Action.EXTERNAL]), tmp_path=tmp_path) as agent:
        first = agent.invoke(speech_like, thread_id="same")
        second = agent.invoke(speech_like, thread_id="same")
    assert len(second.candidates) == len(first.candidates) == 2
    assert len(second.reflections) == 1


def test_rewrite_disabled_keeps_the_more_probable_internal_side_and_says_why(tmp_path, speech_like):
    probs = {Action.INTERNAL: 0.3, Action.EXTERNAL: 0.1, Action.REWRITE: 0.6}
    with make_agent(ScriptedPolicy([Action.REWRITE], probs=probs), tmp_path=tmp_path, max_rewrites=0) as agent:
        result = agent.invoke(speech_like)
    assert result.rewrite_count == 0
    assert result.action is Action.INTERNAL and result.answer == INTERNAL_TEXT[0]
    assert "rewrites are disabled (max_rewrites=0); kept the internal prediction" in result.notes


def test_graph_shape_is_the_real_graph_without_backends(tmp_path):
    from speech_hands.graphs.routing import graph_shape
    from speech_hands.graphs.state import fresh_input

    def edges(compiled) -> set[tuple[str, str, bool]]:
        return {(e.source, e.target, e.conditional) for e in compiled.get_graph().edges}

    with make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path=tmp_path) as agent:
        real = agent.graph
    shape = graph_shape().compile()
    assert edges(shape) == edges(real)
    assert set(shape.channels) == set(real.channels)  # so it reads the real graph's checkpoints
    assert {("prepare", "finish", True), ("gather", "finish", True), ("rewrite", "use_internal", True)} <= edges(shape)
    with pytest.raises(RuntimeError, match="no backend"):
        shape.invoke(fresh_input({}, None))
