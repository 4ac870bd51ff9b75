"""Replay backends: routing over recorded outputs (the paper's demo cases), with no audio at all."""

from __future__ import annotations

import json

import pytest
from doubles import CountingRewriter, ScriptedPolicy

from speech_hands import Action, ConfigurationError, SpeechHands
from speech_hands.backends.replay import ReplayRecord, ReplayStore, records_from_demo_cases


@pytest.fixture(scope="module")
def demo_store(shared_data) -> ReplayStore:
    return ReplayStore(records_from_demo_cases(shared_data / "speech_hands_demo_cases.json"))


def test_demo_cases_become_records(demo_store, shared_data):
    cases = json.loads((shared_data / "speech_hands_demo_cases.json").read_text())
    assert len(demo_store) == len(cases["audio_qa"]) + len(cases["asr"])
    record = demo_store.get("533-131564-0011")
    assert record.internal[0].text == "now don t force him to attempt the theft"
    (nbest,) = record.external.values()
    assert [h.text for h in nbest] == [
        "Now, don't burst into a tempest at that.",
        "Now, don't force into a tempest at Ted.",
    ]


def test_jsonl_round_trip(tmp_path, demo_store):
    path = tmp_path / "replay.jsonl"
    demo_store.to_jsonl(path)
    again = ReplayStore.from_jsonl(path)
    assert again.ids == demo_store.ids
    assert again.get("dev_audio_01455").question == demo_store.get("dev_audio_01455").question


def test_bad_replay_file_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "internal": ["x"]}\n{"internal": ["no id"]}\n')
    with pytest.raises(ConfigurationError, match=r"bad.jsonl:2"):
        ReplayStore.from_jsonl(path)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (Action.INTERNAL, "now don t force him to attempt the theft"),
        (Action.EXTERNAL, "Now, don't burst into a tempest at that."),
    ],
)
def test_routing_over_recorded_asr_outputs(demo_store, action, expected):
    with SpeechHands.from_replay(
        demo_store, policy=ScriptedPolicy([action]), rewriter=CountingRewriter(), trace_db=":memory:"
    ) as agent:
        result = agent.invoke(None, utterance_id="533-131564-0011")
    assert result.audio.is_virtual
    assert result.answer == expected and result.action is action


def test_recorded_audioqa_needs_question_answering_agent(demo_store):
    record = demo_store.get("dev_audio_00486")
    with (
        SpeechHands.from_replay(
            demo_store, policy=ScriptedPolicy([Action.EXTERNAL]), rewriter=CountingRewriter(), trace_db=":memory:"
        ) as asr_agent,
        pytest.raises(ConfigurationError, match="cannot answer a question"),
    ):
        asr_agent.invoke(None, record.question, utterance_id=record.id)
    with SpeechHands.from_replay(
        demo_store,
        question_answering=True,
        policy=ScriptedPolicy([Action.EXTERNAL]),
        rewriter=CountingRewriter(),
        trace_db=":memory:",
    ) as qa_agent:
        result = qa_agent.invoke(None, record.question, utterance_id=record.id)
    assert result.answer == "C. An earthquake"


def test_unknown_utterance_is_a_traced_tool_failure(demo_store):
    with SpeechHands.from_replay(
        demo_store, policy=ScriptedPolicy([Action.INTERNAL]), rewriter=CountingRewriter(), trace_db=":memory:"
    ) as agent:
        result = agent.invoke(None, utterance_id="never-recorded")
    assert result.action is None
    assert "no recorded output" in result.skipped_reason


def test_record_accepts_bare_strings():
    record = ReplayRecord.model_validate({"id": "x", "internal": "hello", "external": {"asr": "hallo"}})
    assert record.internal[0].text == "hello" and record.external["asr"][0].text == "hallo"
