"""Failover of external tools (speech_hands.graphs.availability): a tool that keeps failing (raises,
hangs past its time limit, returns garbage) is left out of later runs without being called, probed
again after the interval (an injected clock, no sleeps), restored on its first good answer; every
change is streamed as a typed event, noted in the trace, and reported by ``SpeechHands.health()``.

The real routing graph, checkpointer and trace reader run; only the tools are doubles."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from doubles import CountingRewriter, FakeClock, FaultyASR, FixedASR, ScriptedPolicy
from helpers import write_wav
from pydantic import ValidationError
from typer.testing import CliRunner

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni
from speech_hands.cli import app
from speech_hands.config import FailoverConfig
from speech_hands.graphs.availability import Availability
from speech_hands.graphs.events import ToolAvailability, parse_event

INTERNAL_TEXT = ["the cat sat on the mat"]


@pytest.fixture()
def speech_like(tmp_path: Path) -> Path:
    t = np.arange(16_000) / 16_000
    return write_wav(tmp_path / "tone.wav", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def make_agent(tool: FaultyASR, clock: FakeClock, *, trace_db: str = ":memory:", **failover) -> SpeechHands:
    omni = ComposedOmni(FixedASR("internal-asr", INTERNAL_TEXT), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    settings = {"after_failures": 2, "probe_interval_s": 30.0, "probe_backoff": 2.0, **failover}
    config = AgentConfig(trace_db=trace_db, detect_speech=False, tool_timeout_s=0.3, failover=settings)
    availability = Availability([tool.name], config.failover, clock=clock)
    return SpeechHands(
        omni, [tool, FixedASR("steady-asr", ["the cat sat on a mat"])], config=config, availability=availability
    )


def changes(agent: SpeechHands, audio: Path) -> list[ToolAvailability]:
    """The availability events of one streamed run."""
    events = [parse_event(c) for c in agent.stream(audio, stream_mode="custom")]
    return [e for e in events if isinstance(e, ToolAvailability)]


def unhang(agent: SpeechHands, tool: FaultyASR) -> None:
    """Let a hanging call that timed out return (the tool is no longer busy), ready to hang again."""
    tool.release.set()
    deadline = time.monotonic() + 10
    while agent.routing.calls.stuck() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not agent.routing.calls.stuck()
    tool.release.clear()


def candidate(result, name: str):
    return next(c for c in result.candidates if c.tool == name)


@pytest.mark.parametrize("fault", ["raise", "hang", "garbage"])
def test_a_failing_tool_is_left_out_after_n_failures_then_probed_and_restored(speech_like, fault):
    clock = FakeClock()
    tool = FaultyASR("flaky-asr", [fault, fault, fault, "ok"])
    with make_agent(tool, clock) as agent:
        first = agent.invoke(speech_like)
        assert tool.calls == 1 and agent.health().status == "ok"  # one failure: still in routing
        if fault == "hang":
            unhang(agent, tool)  # else the next call is refused as busy (a failure too, without a call)
        second = agent.invoke(speech_like)
        assert tool.calls == 2
        assert any("marked unavailable after 2 consecutive failures" in n for n in second.notes), second.notes
        for result in (first, second):
            assert result.answer == INTERNAL_TEXT[0]  # routing went on with the other tools
        if fault == "hang":
            unhang(agent, tool)

        # left out: not called, recorded as unavailable, the other tools still answer
        third = agent.invoke(speech_like)
        assert tool.calls == 2
        left_out = candidate(third, "flaky-asr")
        assert left_out.error is not None and left_out.error.type == "ToolUnavailable"
        assert candidate(third, "steady-asr").ok and third.answer == INTERNAL_TEXT[0]
        assert any("flaky-asr is unavailable" in n and "not called" in n for n in third.notes), third.notes
        health = agent.health()
        (flaky,) = [t for t in health.tools if t.name == "flaky-asr"]
        assert health.status == "degraded" and health.unavailable == ["flaky-asr"]
        assert not flaky.available and flaky.consecutive_failures == 2 and flaky.next_probe_in_s == 30.0
        assert all(t.available for t in health.tools if t.name != "flaky-asr")

        # the probe is due after the interval: one call, it fails, the interval doubles
        clock.now += 30
        probed = agent.invoke(speech_like)
        assert tool.calls == 3
        if fault == "hang":
            unhang(agent, tool)
        assert any("probe failed" in n and "next probe in 60 s" in n for n in probed.notes), probed.notes
        clock.now += 59
        agent.invoke(speech_like)
        assert tool.calls == 3  # not yet
        clock.now += 1
        restored = changes(agent, speech_like)
        assert tool.calls == 4  # the probe answered well
        assert [e.change for e in restored] == ["probing", "restored"] and restored[-1].available
        assert agent.health().status == "ok"
        agent.invoke(speech_like)
        assert tool.calls == 5  # back in routing: called on every run


def test_availability_changes_are_streamed_as_typed_events(speech_like):
    clock = FakeClock()
    tool = FaultyASR("flaky-asr", ["raise"])
    with make_agent(tool, clock, after_failures=1) as agent:
        marked = changes(agent, speech_like)
        (event,) = marked
        assert event.change == "unavailable" and event.tool == "flaky-asr" and not event.available
        assert event.consecutive_failures == 1 and event.next_probe_in_s == 30.0
        assert event.error is not None and "RuntimeError" in event.error
        quiet = changes(agent, speech_like)
        assert quiet == [] and tool.calls == 1  # skipping is not a change
        clock.now += 30
        probed = changes(agent, speech_like)
        assert [e.change for e in probed] == ["probing", "probe_failed"]
        assert probed[-1].next_probe_in_s == 60.0 and not probed[-1].available


def test_the_trace_shows_the_change(tmp_path, speech_like):
    db = tmp_path / "traces.sqlite"
    tool = FaultyASR("flaky-asr", ["raise"])
    with make_agent(tool, FakeClock(), trace_db=str(db), after_failures=1) as agent:
        marked = agent.invoke(speech_like, thread_id="marked")
        skipped = agent.invoke(speech_like, thread_id="skipped")
    assert any("marked unavailable" in n for n in marked.notes)
    shown = CliRunner().invoke(app, ["trace", "marked", "--trace-db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "marked unavailable" in " ".join(shown.output.split())
    shown = CliRunner().invoke(app, ["trace", "skipped", "--trace-db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "not called" in " ".join(shown.output.split())
    assert skipped.answer == INTERNAL_TEXT[0]


def test_concurrent_runs_probe_once(speech_like):
    clock = FakeClock()
    tool = FaultyASR("flaky-asr", ["raise"])
    with make_agent(tool, clock, after_failures=1) as agent:
        agent.invoke(speech_like)
        clock.now += 30
        admitted = [agent.availability.admit("flaky-asr") for _ in range(4)]
    assert [a.probe for a in admitted] == [True, False, False, False]
    assert [a.call for a in admitted] == [True, False, False, False]


def test_the_internal_model_is_never_taken_out(speech_like):
    internal = FaultyASR("internal-asr", ["raise"])
    omni = ComposedOmni(internal, ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    config = AgentConfig(trace_db=":memory:", detect_speech=False, failover={"after_failures": 1})
    with SpeechHands(omni, [FixedASR("steady-asr", ["a mat"])], config=config) as agent:
        for _ in range(3):
            result = agent.invoke(speech_like)
            assert result.answer == "a mat"  # fell back to the external tool, as before
        assert internal.calls == 3
        assert agent.health().status == "ok"
        assert [(t.name, t.failover) for t in agent.health().tools] == [("internal-asr", False), ("steady-asr", True)]


def test_failover_off_keeps_calling(speech_like):
    tool = FaultyASR("flaky-asr", ["raise"])
    with make_agent(tool, FakeClock(), after_failures=None) as agent:
        for _ in range(4):
            agent.invoke(speech_like)
        assert tool.calls == 4 and agent.health().status == "ok"


def test_failover_settings_are_validated():
    assert AgentConfig().failover == FailoverConfig(
        after_failures=3, probe_interval_s=30.0, probe_backoff=2.0, max_probe_interval_s=600.0
    )
    for bad in ({"after_failures": 0}, {"probe_interval_s": 0}, {"probe_backoff": 0.5}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            AgentConfig(failover=bad)
    with pytest.raises(ValidationError, match="must be at least probe_interval_s"):
        FailoverConfig(probe_interval_s=60, max_probe_interval_s=10)


def test_backoff_stops_at_the_longest_interval():
    clock = FakeClock()
    availability = Availability(
        ["t"], FailoverConfig(after_failures=1, probe_interval_s=10, max_probe_interval_s=25), clock=clock
    )
    assert availability.record("t", "boom").change == "unavailable"
    waits = []
    for _ in range(3):
        clock.now += availability.status()["t"].next_probe_in_s
        admission = availability.admit("t")
        assert admission.probe
        waits.append(availability.record("t", "boom", probe=True).next_probe_in_s)
    assert waits == [20.0, 25.0, 25.0]
    assert availability.record("t", None, probe=True).change == "restored"
    assert availability.status()["t"].available


def test_availability_is_shared_by_concurrent_runs(speech_like):
    tool = FaultyASR("flaky-asr", ["raise"])
    with make_agent(tool, FakeClock()) as agent:
        results = agent.batch([speech_like] * 8, max_concurrency=4)
    marked = [n for r in results for n in r.notes if "marked unavailable" in n]
    assert len(marked) == 1  # one change, however many runs saw the failures
    assert tool.calls < 8  # the runs that started after it was marked did not call it
    assert all(r.answer == INTERNAL_TEXT[0] for r in results)
    left_out = [r for r in results if candidate(r, "flaky-asr").error.type == "ToolUnavailable"]
    assert len(left_out) == 8 - tool.calls
