"""OpenTelemetry spans of a run: the span tree and its GenAI / OpenInference attributes for each of the
three actions, a failing tool, an interrupted run, and no OpenTelemetry import at all when it is off.
The real graph, checkpointer and callback handler run, into the SDK's in-memory span exporter; a
scripted reflection forces each action."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from doubles import CountingRewriter, FailingASR, FixedASR, ScriptedPolicy
from helpers import REPO, write_wav
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni


@pytest.fixture()
def speech_like(tmp_path: Path) -> Path:
    t = np.arange(16_000) / 16_000
    return write_wav(tmp_path / "tone.wav", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


@pytest.fixture()
def exporter():
    return InMemorySpanExporter()


def run_traced(actions, exporter, tmp_path, audio, *, externals=None, thread_id="otel-thread", **config):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    omni = ComposedOmni(FixedASR("internal-asr", ["the cat sat"]), ScriptedPolicy(actions), CountingRewriter())
    externals = externals if externals is not None else [FixedASR("external-asr", ["the cat sat on", "a cat"])]
    cfg = AgentConfig(trace_db=str(tmp_path / "t.sqlite"), detect_speech=False, otel=True, **config)
    with SpeechHands(omni, externals, config=cfg, tracer_provider=provider) as agent:
        result = agent.invoke(audio, thread_id=thread_id)
    return result, {s.name: s for s in exporter.get_finished_spans()}, list(exporter.get_finished_spans())


def check_tree(spans: list) -> object:
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "invoke_agent speech-hands"
    for key, value in {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "speech-hands",
        "gen_ai.conversation.id": "otel-thread",
        "openinference.span.kind": "AGENT",
        "session.id": "otel-thread",
    }.items():
        assert root.attributes[key] == value
    for span in spans:
        assert span.context.trace_id == root.context.trace_id
        if span is not root:
            assert span.parent.span_id == root.context.span_id  # every child hangs off the run's span
    return root


@pytest.mark.parametrize(
    ("actions", "answer"), [([Action.INTERNAL], "the cat sat"), ([Action.EXTERNAL], "the cat sat on")]
)
def test_spans_of_an_internal_and_an_external_run(actions, answer, exporter, tmp_path, speech_like):
    result, by_name, spans = run_traced(actions, exporter, tmp_path, speech_like)
    assert result.answer == answer
    root = check_tree(spans)
    assert root.attributes["output.value"] == answer
    assert root.attributes["speech_hands.action"] == actions[0].value
    assert sorted(s.name for s in spans) == sorted(
        ["invoke_agent speech-hands", "execute_tool internal-asr", "execute_tool external-asr", "decision"]
    )
    tool = by_name["execute_tool external-asr"]
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "external-asr"
    assert tool.attributes["openinference.span.kind"] == "TOOL"
    assert tool.attributes["gen_ai.conversation.id"] == "otel-thread"
    assert tool.attributes["speech_hands.tool.n_hypotheses"] == 2
    assert tool.attributes["output.value"] == "the cat sat on"
    assert (
        tool.attributes["gen_ai.tool.call.id"] != by_name["execute_tool internal-asr"].attributes["gen_ai.tool.call.id"]
    )
    decision = by_name["decision"]
    assert decision.attributes["openinference.span.kind"] == "DECISION"
    assert decision.attributes["speech_hands.decision.action"] == actions[0].value
    assert decision.attributes["speech_hands.decision.policy"] == "scripted"
    assert decision.attributes["speech_hands.decision.round"] == 0
    assert decision.attributes["speech_hands.decision.p_internal"] == pytest.approx(
        0.8 if actions[0] is Action.INTERNAL else 0.1
    )
    assert decision.attributes["speech_hands.decision.p_external"] == pytest.approx(
        0.8 if actions[0] is Action.EXTERNAL else 0.1
    )
    assert decision.attributes["speech_hands.decision.p_rewrite"] == pytest.approx(0.1)
    assert root.start_time <= decision.start_time <= decision.end_time <= root.end_time


def test_spans_of_a_rewrite_run(exporter, tmp_path, speech_like):
    result, _, spans = run_traced([Action.REWRITE, Action.INTERNAL], exporter, tmp_path, speech_like, max_rewrites=2)
    assert result.action is Action.REWRITE and result.answer == "rewrite 1"
    check_tree(spans)
    decisions = sorted((s for s in spans if s.name == "decision"), key=lambda s: s.start_time)
    assert [d.attributes["speech_hands.decision.round"] for d in decisions] == [0, 1]
    assert [d.attributes["speech_hands.decision.action"] for d in decisions] == ["rewrite", "internal"]
    assert [d.attributes["speech_hands.decision.route"] for d in decisions] == ["rewrite", "use_internal"]
    (rewrite,) = [s for s in spans if s.name == "rewrite"]
    assert rewrite.attributes["openinference.span.kind"] == "CHAIN"
    assert rewrite.attributes["speech_hands.rewrite.strategy"] == "rewrite:counting"
    assert rewrite.attributes["speech_hands.rewrite.round"] == 1
    assert rewrite.attributes["speech_hands.rewrite.n_candidates"] == 3
    assert rewrite.attributes["output.value"] == "rewrite 1"
    assert decisions[0].end_time <= rewrite.start_time <= rewrite.end_time <= decisions[1].start_time


def test_a_failing_tool_span_records_its_error(exporter, tmp_path, speech_like):
    result, by_name, spans = run_traced([Action.INTERNAL], exporter, tmp_path, speech_like, externals=[FailingASR()])
    assert result.answer == "the cat sat"
    check_tree(spans)
    broken = by_name["execute_tool broken-asr"]
    assert broken.status.status_code is StatusCode.ERROR
    assert broken.attributes["error.type"] == "RuntimeError"
    assert any(e.name == "exception" for e in broken.events)
    assert by_name["execute_tool internal-asr"].status.status_code is not StatusCode.ERROR


def test_an_interrupted_run_ends_its_spans(exporter, tmp_path, speech_like):
    result, by_name, spans = run_traced(
        [Action.REWRITE], exporter, tmp_path, speech_like, interrupt_on=[Action.REWRITE]
    )
    assert result.pending_review is not None
    root = check_tree(spans)
    assert root.attributes["speech_hands.interrupted"] is True
    assert root.status.status_code is not StatusCode.ERROR
    assert by_name["decision"].attributes["speech_hands.interrupted"] is True


def test_off_by_default_costs_no_import_and_no_provider(tmp_path, speech_like):
    code = f"""
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
from doubles import FixedASR, ScriptedPolicy, CountingRewriter
from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni
omni = ComposedOmni(FixedASR("i", ["a"]), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
agent = SpeechHands(omni, [FixedASR("e", ["b"])], config=AgentConfig(trace_db=":memory:", detect_speech=False))
assert agent.invoke({str(speech_like)!r}).answer == "a"
from opentelemetry import trace  # langsmith (a langchain-core dependency) imports the API anyway
print("speech_hands.tracing.otel" in sys.modules, type(trace.get_tracer_provider()).__name__)
"""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # the handler module was never imported and no tracer provider was installed
    assert out.stdout.strip().splitlines()[-1] == "False ProxyTracerProvider"


def test_the_environment_variable_turns_it_on(exporter, tmp_path, speech_like, monkeypatch):
    monkeypatch.setenv("SPEECH_HANDS_OTEL", "1")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    omni = ComposedOmni(FixedASR("i", ["a"]), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    cfg = AgentConfig(trace_db=":memory:", detect_speech=False)
    with SpeechHands(omni, [FixedASR("e", ["b"])], config=cfg, tracer_provider=provider) as agent:
        agent.invoke(speech_like)
    assert "invoke_agent speech-hands" in {s.name for s in exporter.get_finished_spans()}
