"""LangGraph's own machinery in the routing graph: run config and callbacks, context_schema, stream
modes and the typed custom events, interrupt + resume, time travel in traces, node cache and retry
policies, and the native async path. The real graph and checkpointer run; test doubles stand only for
the models (a scripted reflection forces each edge). The tests that lean on the checkpointer (interrupt
and resume, time travel, long audio's subgraph checkpoints, the async saver) run once per saver: SQLite
and a real PostgreSQL (``checkpointer_location``, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from doubles import CountingRewriter, FixedASR, ScriptedPolicy
from helpers import write_wav
from langchain_core.callbacks import BaseCallbackHandler
from loopback import serve

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni
from speech_hands.graphs.context import RunContext
from speech_hands.graphs.events import DecisionEvent, RewriteEvent, ToolFinished, ToolStarted, VoteEvent, parse_event

INTERNAL_TEXT = ["the cat sat on the mat", "the cat sat on a mat", "a cat sat on the mat"]
EXTERNAL_TEXT = ["the cat sat on the hat", "a cat sat on the hat", "the cat sat on that", "the cats sat on a hat"]


@pytest.fixture()
def speech_like(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    samples = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)
    return write_wav(tmp_path / "tone.wav", samples.astype(np.float32))


def make_agent(policy, tmp_path: Path, *, externals=None, **config) -> tuple[SpeechHands, FixedASR, list]:
    internal = FixedASR("internal-asr", INTERNAL_TEXT)
    externals = externals if externals is not None else [FixedASR("external-asr", EXTERNAL_TEXT)]
    omni = ComposedOmni(internal, policy, CountingRewriter())
    # fixed short texts: long audio's words-per-second check is off; trace_db: SQLite unless given
    cfg = AgentConfig(
        **{"trace_db": str(tmp_path / "traces.sqlite"), "detect_speech": False, "min_words_per_speech_s": 0.0, **config}
    )
    return SpeechHands(omni, externals, config=cfg), internal, externals


class Recorder(BaseCallbackHandler):
    """Every tool run and every chain run a callback manager reports."""

    def __init__(self) -> None:
        self.tools: list[dict[str, Any]] = []
        self.chains: list[dict[str, Any]] = []

    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, tags=None, metadata=None, **kw):
        self.tools.append(
            {"name": serialized.get("name"), "parent": parent_run_id, "tags": tags or [], "metadata": metadata or {}}
        )

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None, metadata=None, **kw):
        self.chains.append({"name": kw.get("name"), "run_id": run_id, "tags": tags or [], "metadata": metadata or {}})


# --------------------------------------------------------------------- config and context


def test_a_callback_sees_one_tool_run_per_perception_call_with_tags_and_metadata(tmp_path, speech_like):
    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path)
    recorder = Recorder()
    config = {"callbacks": [recorder], "tags": ["issue-16"], "metadata": {"dataset": "tone"}, "run_name": "routing"}
    with agent:
        result = agent.invoke(speech_like, config=config, thread_id="cfg-1")
    assert result.thread_id == "cfg-1"
    assert sorted(t["name"] for t in recorder.tools) == ["external-asr", "internal-asr"]  # one run per call
    perceive_runs = {c["run_id"] for c in recorder.chains if c["name"] == "perceive"}
    assert len(perceive_runs) == 2
    for tool in recorder.tools:  # each tool run is a child of its own perceive node run
        assert tool["parent"] in perceive_runs
        assert "issue-16" in tool["tags"] and tool["metadata"].get("dataset") == "tone"
    assert recorder.chains[0]["name"] == "routing"  # run_name names the root run


def test_thread_id_comes_from_config_when_not_given(tmp_path, speech_like):
    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path)
    with agent:
        result = agent.invoke(speech_like, config={"configurable": {"thread_id": "from-config"}})
    assert result.thread_id == "from-config"


def test_context_overrides_what_the_tools_are_asked_and_the_rewrite_bound(tmp_path, speech_like):
    policy = ScriptedPolicy([Action.REWRITE])
    agent, _, _ = make_agent(policy, tmp_path, n_best=4, max_rewrites=2)
    with agent:
        default = agent.invoke(speech_like)
        changed = agent.invoke(speech_like, context={"n_best": 2, "max_rewrites": 0})
        typed = agent.invoke(speech_like, context=RunContext(n_best=1))
    # the external ASR tool is asked for the run's N-best size (the omni's own prediction keeps its own)
    assert [len(o.hypotheses) for o in default.externals] == [4]
    assert default.rewrite_count == 2
    assert [len(o.hypotheses) for o in changed.externals] == [2]
    assert changed.rewrite_count == 0  # max_rewrites=0 for this run only
    assert [len(o.hypotheses) for o in typed.externals] == [1]
    assert typed.rewrite_count == 2  # the agent's own bound again


def test_context_k_samples_turns_on_the_vote_for_one_run(tmp_path, speech_like):
    agent, _, _ = make_agent(ScriptedPolicy([Action.EXTERNAL]), tmp_path)
    with agent:
        voted = agent.invoke(speech_like, context={"k_samples": 3})
        single = agent.invoke(speech_like)
    assert len(voted.samples) == 3 and len(single.samples) == 1


def test_bad_context_is_refused():
    with pytest.raises(ValueError, match="n_best"):
        RunContext.model_validate({"n_best": 0})


# --------------------------------------------------------------------- stream modes and custom events


def test_default_stream_is_unchanged(tmp_path, speech_like):
    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path)
    with agent:
        events = list(agent.stream(speech_like))
    assert events[0].node == "prepare" and events[-1].node == "result"
    assert events[-1].result is not None and events[-1].result.answer == INTERNAL_TEXT[0]


@pytest.mark.parametrize("mode", ["updates", "values", "debug", "messages", "checkpoints", "tasks"])
def test_each_stream_mode_yields_what_langgraph_yields(tmp_path, speech_like, mode):
    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path)
    with agent:
        ours = list(agent.stream(speech_like, stream_mode=mode, thread_id="ours"))
        from speech_hands.graphs.state import fresh_input

        loaded = agent._prepare(speech_like, None, None)
        theirs = list(
            agent.graph.stream(
                fresh_input(loaded.ref.model_dump(mode="json"), None),
                {"configurable": {"thread_id": "theirs"}},
                stream_mode=mode,
            )
        )
    assert len(ours) == len(theirs)
    assert [type(c) for c in ours] == [type(c) for c in theirs]
    if mode == "updates":
        assert [next(iter(c)) for c in ours] == [next(iter(c)) for c in theirs]
        assert next(iter(ours[-1])) == "finish"
    if mode == "values":
        assert ours[-1]["answer"] == INTERNAL_TEXT[0]
    if mode == "debug":
        assert {c["type"] for c in ours} >= {"task", "task_result", "checkpoint"}
    if mode == "messages":
        assert ours == []  # no chat model in this graph: LangGraph yields no message chunk


def test_custom_events_have_typed_payloads(tmp_path, speech_like):
    agent, _, _ = make_agent(ScriptedPolicy([Action.REWRITE, Action.INTERNAL]), tmp_path, max_rewrites=1)
    with agent:
        chunks = list(agent.stream(speech_like, stream_mode="custom", context={"k_samples": 2}))
    events = [parse_event(c) for c in chunks]
    started = [e for e in events if isinstance(e, ToolStarted)]
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert sorted(e.tool for e in started) == ["external-asr", "internal-asr"]
    assert all(e.n_best == 5 for e in started)
    assert {e.tool: (e.ok, e.n_hypotheses, e.top) for e in finished} == {
        "internal-asr": (True, 3, INTERNAL_TEXT[0]),
        "external-asr": (True, 4, EXTERNAL_TEXT[0]),
    }
    assert all(e.elapsed_s >= 0 and e.error is None for e in finished)
    decisions = [e for e in events if isinstance(e, DecisionEvent)]
    assert [(d.round, d.action, d.route, d.n_draws) for d in decisions] == [
        (0, "rewrite", "rewrite", 2),
        (1, "internal", "use_internal", 2),
    ]
    assert decisions[0].probs == pytest.approx({"internal": 0.1, "external": 0.1, "rewrite": 0.8})
    assert decisions[0].policy == "scripted+majority-vote"
    (rewrite,) = [e for e in events if isinstance(e, RewriteEvent)]
    assert rewrite.strategy == "rewrite:counting" and rewrite.text == "rewrite 1" and rewrite.round == 1
    assert set(rewrite.candidates) == {INTERNAL_TEXT[0], EXTERNAL_TEXT[0]}
    votes = [e for e in events if isinstance(e, VoteEvent)]
    assert [v.round for v in votes] == [0, 1] and votes[0].winner == "<rewrite>"


def test_a_failing_tool_is_reported_in_its_finished_event(tmp_path, speech_like):
    from doubles import FailingASR

    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path, externals=[FailingASR()])
    with agent:
        events = [parse_event(c) for c in agent.stream(speech_like, stream_mode="custom")]
    (broken,) = [e for e in events if isinstance(e, ToolFinished) and e.tool == "broken-asr"]
    assert not broken.ok and broken.error == "RuntimeError: CUDA out of memory (simulated)"


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, shared_data):
    from helpers import dev_flac

    from speech_hands.audio import load_audio

    utts = ["2609-156975-0007", "3331-159605-0008", "2033-164914-0008"]
    samples = np.concatenate([load_audio(dev_flac(u)).samples for u in utts])
    return write_wav(tmp_path_factory.mktemp("long") / "long.wav", samples)


@pytest.mark.parametrize("modes", [["updates", "custom"], "updates"])
def test_stream_modes_reach_the_segment_subgraphs(tmp_path, long_wav, modes):
    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path)
    with agent:
        chunks = list(agent.stream(long_wav, stream_mode=modes, subgraphs=True))
    if isinstance(modes, str):
        chunks = [(ns, modes, data) for ns, data in chunks]
    namespaces = {ns for ns, _, _ in chunks}
    assert () in namespaces and any(ns and ns[0].startswith("route_segment") for ns in namespaces)
    assert {mode for _, mode, _ in chunks} == set([modes] if isinstance(modes, str) else modes)
    if "custom" in modes:  # every segment's tool events, typed
        tools = [parse_event(d) for ns, mode, d in chunks if mode == "custom" and ns]
        assert {e.tool for e in tools if isinstance(e, ToolStarted)} == {"internal-asr", "external-asr"}


# --------------------------------------------------------------------- human in the loop, time travel


def test_interrupt_before_a_rewrite_then_accept(tmp_path, speech_like, checkpointer_location):
    agent, _, _ = make_agent(
        ScriptedPolicy([Action.REWRITE, Action.INTERNAL]),
        tmp_path,
        interrupt_on=["rewrite"],
        trace_db=checkpointer_location,
    )
    with agent:
        paused = agent.invoke(speech_like, thread_id="hitl-accept")
        assert paused.pending_review is not None
        assert paused.pending_review["action"] == "rewrite" and "interrupt_on" in paused.pending_review["why"]
        assert paused.pending_review["candidates"] == {
            "internal-asr": INTERNAL_TEXT[0],
            "external-asr": EXTERNAL_TEXT[0],
        }
        assert paused.answer == "" and paused.rewrite_count == 0
        done = agent.resume("hitl-accept")
    assert done.pending_review is None
    assert done.action is Action.REWRITE and done.answer == "rewrite 1"
    assert any("a person accepted <rewrite>" in n for n in done.notes)


def test_interrupt_then_override_with_another_action(tmp_path, speech_like, checkpointer_location):
    agent, _, _ = make_agent(
        ScriptedPolicy([Action.REWRITE]), tmp_path, interrupt_on=["rewrite"], trace_db=checkpointer_location
    )
    with agent:
        agent.invoke(speech_like, thread_id="hitl-override")
        done = agent.resume("hitl-override", action="external")
        with pytest.raises(Exception, match="not waiting for a review"):
            agent.resume("hitl-override")
    assert done.action is Action.EXTERNAL and done.answer == EXTERNAL_TEXT[0]
    assert done.reflection is not None and done.reflection.policy == "scripted+review"
    assert any("overrode <rewrite> with <external>" in n for n in done.notes)


def test_interrupt_below_a_probability_through_the_run_context(tmp_path, speech_like, checkpointer_location):
    probs = {Action.INTERNAL: 0.45, Action.EXTERNAL: 0.35, Action.REWRITE: 0.2}
    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL], probs=probs), tmp_path, trace_db=checkpointer_location)
    with agent:
        assert agent.invoke(speech_like).pending_review is None  # off unless asked for
        paused = agent.invoke(speech_like, thread_id="low", context={"interrupt_below": 0.5})
        assert paused.pending_review is not None and "below interrupt_below" in paused.pending_review["why"]
        done = agent.resume("low", action="<external>")  # the context of the paused run is kept
    assert done.action is Action.EXTERNAL


def test_a_forked_thread_traces_one_branch(tmp_path, speech_like, checkpointer_location):
    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path, trace_db=checkpointer_location)
    with agent:
        first = agent.invoke(speech_like, thread_id="fork")
        config = {"configurable": {"thread_id": "fork"}}
        before_vote = next(s for s in agent.graph.get_state_history(config) if s.next == ("vote",))
        forked = agent.graph.update_state(before_vote.config, {"notes": ["forked by a person"]}, as_node="reflect")
        agent.graph.invoke(None, forked)
        trace = agent.trace("fork")
        original = agent.trace("fork", checkpoint_id=first.checkpoint_id)
    one_pass = ["prepare", "perceive", "perceive", "gather", "reflect", "vote", "use_internal", "finish"]
    assert sorted(trace.route) == sorted(one_pass)  # not the original branch's vote and finish again
    assert trace.route[-3:] == ["vote", "use_internal", "finish"]
    assert trace.result is not None and "forked by a person" in trace.result.notes
    assert sorted(original.route) == sorted(one_pass)
    assert original.result is not None and "forked by a person" not in original.result.notes


# --------------------------------------------------------------------- cache and retry policies


def test_perception_cache_skips_tools_for_the_same_audio_and_n_best(tmp_path, speech_like):
    agent, internal, (external,) = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path, perception_cache="memory")
    with agent:
        first = agent.invoke(speech_like)
        again = agent.invoke(speech_like)
        assert len(internal.intervals) == 1 and len(external.intervals) == 1  # perceived once
        assert again.candidates == first.candidates and again.answer == first.answer
        agent.invoke(speech_like, context={"n_best": 2})
        assert len(internal.intervals) == 2 and len(external.intervals) == 2  # another key: perceived again
    uncached, internal2, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path / "b")
    with uncached:
        uncached.invoke(speech_like)
        uncached.invoke(speech_like)
    assert len(internal2.intervals) == 2  # off by default


def test_sqlite_perception_cache_outlives_the_agent(tmp_path, speech_like):
    for _ in range(2):
        agent, internal, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path, perception_cache="sqlite")
        with agent:
            agent.invoke(speech_like)
    assert len(internal.intervals) == 0  # the second agent read the first one's perception
    assert (tmp_path / "perception-cache.sqlite").exists()


def test_a_remote_backend_failing_once_with_a_connection_error_is_retried(tmp_path, speech_like):
    from speech_hands.backends.openai_server import OpenAIServerASR

    calls: list[float] = []

    def handle(_, body):
        calls.append(time.perf_counter())
        return None if len(calls) == 1 else (200, {"text": "the cat sat on the hat"})

    with serve(handle) as url:
        served = OpenAIServerASR("whisper", base_url=url, name="served-asr", max_retries=0)
        agent, _, _ = make_agent(ScriptedPolicy([Action.EXTERNAL]), tmp_path, externals=[served])
        with agent:
            result = agent.invoke(speech_like)
            assert "retry_policy" in agent.routing.policies()["perceive"]
    assert len(calls) == 2  # the node ran again after the dropped connection
    (output,) = result.externals
    assert output.ok and output.top.text == "the cat sat on the hat"
    assert result.answer == "the cat sat on the hat"


def test_a_remote_backend_that_stays_down_is_recorded_after_the_last_attempt(tmp_path, speech_like):
    from speech_hands.backends.openai_server import OpenAIServerASR

    calls: list[int] = []

    def handle(_, body):
        calls.append(1)

    with serve(handle) as url:
        served = OpenAIServerASR("whisper", base_url=url, name="served-asr", max_retries=0)
        agent, _, _ = make_agent(ScriptedPolicy([Action.EXTERNAL]), tmp_path, externals=[served], retry_attempts=2)
        with agent:
            result = agent.invoke(speech_like)
    assert len(calls) == 2
    (output,) = result.externals
    assert output.error is not None and output.error.type == "RemoteUnavailable"
    assert result.answer == INTERNAL_TEXT[0]  # routing went on without it


def test_local_backends_get_no_retry_policy(tmp_path):
    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path)
    with agent:
        assert "retry_policy" not in agent.routing.policies()["perceive"]
        assert "reflect" not in agent.routing.policies()


# --------------------------------------------------------------------- async


def test_ainvoke_runs_the_graph_natively_on_an_async_checkpointer(
    tmp_path, speech_like, monkeypatch, checkpointer_location
):
    agent, _, _ = make_agent(ScriptedPolicy([Action.EXTERNAL]), tmp_path, trace_db=checkpointer_location)

    def no_sync(*args, **kwargs):
        raise AssertionError("ainvoke must not call the sync graph")

    async def main():
        return await asyncio.gather(*(agent.ainvoke(speech_like, thread_id=f"async-{i}") for i in range(3)))

    with agent:
        monkeypatch.setattr(agent.graph, "invoke", no_sync)
        results = asyncio.run(main())
        assert [r.answer for r in results] == [EXTERNAL_TEXT[0]] * 3
        trace = agent.trace("async-1")  # written by the async saver (SQLite or Postgres) into the same storage
    assert trace.route[-3:] == ["vote", "use_external", "finish"]


def test_ainvoke_with_the_in_memory_checkpointer(tmp_path, speech_like):
    agent, _, _ = make_agent(ScriptedPolicy([Action.INTERNAL]), tmp_path)
    memory = SpeechHands(agent.omni, agent.external, config=agent.config.model_copy(update={"trace_db": ":memory:"}))
    with memory:
        result = asyncio.run(memory.ainvoke(speech_like, context={"n_best": 1}))
    assert result.answer == INTERNAL_TEXT[0] and [len(o.hypotheses) for o in result.externals] == [1]


def test_every_segment_of_long_audio_pauses_for_review_and_one_resume_answers_them(
    tmp_path, long_wav, checkpointer_location
):
    agent, _, _ = make_agent(
        ScriptedPolicy([Action.INTERNAL]), tmp_path, interrupt_on=["internal"], trace_db=checkpointer_location
    )
    with agent:
        paused = agent.invoke(long_wav, thread_id="long-review")
        assert paused.pending_review is not None and paused.pending_review["action"] == "internal"
        done = agent.resume("long-review", action="external")
    assert done.pending_review is None
    assert len(done.segments) >= 2 and all(s.action is Action.EXTERNAL for s in done.segments)
    assert done.answer == " ".join([EXTERNAL_TEXT[0]] * len(done.segments))
