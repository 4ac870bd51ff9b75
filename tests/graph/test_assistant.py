"""The voice assistant's graph: turns on real audio through the real routing graph, the real SQLite
checkpointer and the real cue measurements. Doubles stand in only for what is not under test: the
speech recognisers (to see the prompt they receive) and the chat model (langchain-core's
``GenericFakeChatModel``, recording what it is sent)."""

from __future__ import annotations

from itertools import cycle
from typing import Any

import pytest
from doubles import CountingRewriter, FixedASR, FixedCaption, ScriptedPolicy
from helpers import dev_flac
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import Field

from speech_hands import AgentConfig, SpeechHands, VoiceAssistant
from speech_hands.backends.composed import ComposedOmni
from speech_hands.graphs.assistant import asr_prompt, turn_message
from speech_hands.graphs.routing import perception_cache_key
from speech_hands.tracing.trace import read_trace
from speech_hands.types import Action

TURNS = ["1688-142285-0000", "1688-142285-0001", "1688-142285-0002"]


class PromptedASR(FixedASR):
    """Records the prompt each call received; its text names the call, so transcripts differ turn by turn."""

    def __init__(self, name: str) -> None:
        super().__init__(name, [])
        self.prompts: list[str | None] = []

    def transcribe(self, audio: Any, n_best: int = 5, prompt: str | None = None) -> list:
        self.prompts.append(prompt)
        self.texts = [f"{self.name} heard {audio.id}"]
        return super().transcribe(audio, n_best)


class RecordingChat(GenericFakeChatModel):
    """GenericFakeChatModel that keeps every list of messages it was sent."""

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.received.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


class BrokenChat(GenericFakeChatModel):
    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("chat server went away (simulated)")


def _agent(db: str, *, external: Any = None, cache: str = "none") -> tuple[SpeechHands, PromptedASR]:
    internal = PromptedASR("base")
    omni = ComposedOmni(internal, ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    config = AgentConfig(trace_db=db, perception_cache=cache)
    return SpeechHands(omni, [external or FixedASR("tiny", ["hello there"])], config=config), internal


def _chat(replies: list[str]) -> RecordingChat:
    return RecordingChat(messages=cycle([AIMessage(content=r) for r in replies]), received=[])


def test_three_turns_grow_the_history_the_chat_model_sees(tmp_path, shared_data):
    agent, _ = _agent(str(tmp_path / "t.sqlite"))
    model = _chat(["first reply", "second reply", "third reply"])
    with VoiceAssistant(agent, model) as assistant:
        thread = assistant.new_thread()
        turns = [assistant.turn(dev_flac(uid), thread_id=thread) for uid in TURNS]
    assert [t.index for t in turns] == [1, 2, 3] and {t.thread_id for t in turns} == {thread}
    assert [t.reply for t in turns] == ["first reply", "second reply", "third reply"]
    assert [len(m) for m in model.received] == [2, 4, 6]  # system + every earlier user / reply + this turn
    last = model.received[-1]
    assert isinstance(last[0], SystemMessage) and "not emotions" in last[0].content
    assert [m.content for m in last if isinstance(m, AIMessage)] == ["first reply", "second reply"]
    users = [m.content for m in last if isinstance(m, HumanMessage)]
    assert users[0].startswith(
        "base heard 1688-142285-0000\n\n(turn 1; heard by speech recognition, <internal>, P=0.80"
    )
    assert all("cues: speaking rate" in u and "dBFS" in u and "pitch 5th-95th percentile" in u for u in users)
    cues = turns[0].cues  # measured on the real audio; the rate counts the transcript's 3 words
    assert cues is not None and not cues.no_speech and 5.0 < cues.speech_s < cues.duration_s
    assert cues.speaking_rate_wps == pytest.approx(3 / cues.speech_s, abs=0.01) and cues.loudness_dbfs < 0


def test_earlier_turns_reach_the_next_turns_asr_prompt(tmp_path, shared_data):
    agent, internal = _agent(str(tmp_path / "t.sqlite"), external=PromptedASR("tiny"))
    external = agent.external[0]
    with VoiceAssistant(agent, asr_context=True) as assistant:
        thread = assistant.new_thread()
        turns = [assistant.turn(dev_flac(uid), thread_id=thread) for uid in TURNS]
    first, second = "base heard 1688-142285-0000", "base heard 1688-142285-0001"
    assert internal.prompts == [None, first, f"{first} {second}"]
    assert external.prompts == internal.prompts  # every recogniser that takes a prompt gets the same
    assert [t.asr_prompt for t in turns] == internal.prompts
    assert all(t.reply is None for t in turns)  # no chat model: a multi-turn transcription session


def test_without_asr_context_no_prompt_and_a_tool_without_prompts_is_noted(tmp_path, shared_data):
    agent, internal = _agent(str(tmp_path / "t.sqlite"))
    with VoiceAssistant(agent, asr_context=False) as assistant:
        thread = assistant.new_thread()
        for uid in TURNS[:2]:
            assistant.turn(dev_flac(uid), thread_id=thread)
    assert internal.prompts == [None, None]
    agent, internal = _agent(str(tmp_path / "u.sqlite"))
    with VoiceAssistant(agent, asr_context=True) as assistant:
        thread = assistant.new_thread()
        turns = [assistant.turn(dev_flac(uid), thread_id=thread) for uid in TURNS[:2]]
    assert not any("takes no text prompt" in n for n in turns[0].notes)  # no prompt on turn 1
    assert any(n.startswith("tool tiny takes no text prompt") for n in turns[1].notes)  # FixedASR takes none


def test_the_prompt_keeps_the_most_recent_words():
    turns = [
        {"index": 1, "audio": {"id": "a"}, "transcript": "one two three", "action": "internal"},
        {"index": 2, "audio": {"id": "b"}, "transcript": "what is it", "question": "q?", "action": "internal"},
        {"index": 3, "audio": {"id": "c"}, "transcript": "", "action": None, "skipped_reason": "no speech"},
        {"index": 4, "audio": {"id": "d"}, "transcript": "four five six seven", "action": "external"},
    ]
    assert asr_prompt(turns, max_words=5) == "three four five six seven"  # QA answers and skipped turns left out
    assert asr_prompt(turns[:3], max_words=100) == "one two three"
    assert asr_prompt([], max_words=5) is None


def test_the_prompt_is_part_of_the_perception_cache_key(tmp_path, shared_data):
    task = {"tool": "base", "audio": {"sha256": "abc"}, "question": None, "n_best": 5}
    keys = {perception_cache_key({**task, "prompt": p}) for p in (None, "earlier text", "other text")}
    assert len(keys) == 3
    # behaviour: the same audio after other earlier text is perceived again, the same audio and text is not
    agent, internal = _agent(str(tmp_path / "t.sqlite"), cache="memory")
    for prompt in ("earlier text", "other text", "other text"):
        agent.invoke(dev_flac(TURNS[0]), prompt=prompt)
    assert internal.prompts == ["earlier text", "other text"]


def test_the_conversation_resumes_in_a_new_process_and_each_turn_is_traced(tmp_path, shared_data):
    db = str(tmp_path / "t.sqlite")
    agent, _ = _agent(db)
    with VoiceAssistant(agent, _chat(["r1", "r2"])) as assistant:
        thread = assistant.new_thread()
        before = [assistant.turn(dev_flac(uid), thread_id=thread) for uid in TURNS[:2]]
    agent.close()
    agent, _ = _agent(db)  # a fresh agent over the same trace database: what a restarted process has
    model = _chat(["r3"])
    with VoiceAssistant(agent, model) as assistant:
        third = assistant.turn(dev_flac(TURNS[2]), thread_id=thread)
        kept = assistant.conversation(thread)
        trace = assistant.trace(thread, turn=1)
    assert third.index == 3 and [t.model_dump() for t in kept[:2]] == [t.model_dump() for t in before]
    assert [m.content for m in model.received[0] if isinstance(m, AIMessage)] == ["r1", "r2"]
    assert trace.turn == 1 and trace.result is not None and trace.result.answer == before[0].transcript
    assert trace.route[0] == "prepare" and "vote" in trace.route and trace.route[-1] == "finish"
    assert [t.index for t in trace.turns] == [1, 2, 3] and all(t.route for t in trace.turns)
    latest = read_trace(agent.graph, thread)  # what `speech-hands trace THREAD` shows: the latest turn
    assert latest.turn == 3 and latest.result.answer == third.transcript
    agent.close()


def test_an_audio_qa_turn_routes_its_question_through_the_captioner(tmp_path, shared_data):
    omni = ComposedOmni(FixedCaption("omni", ["a man reading"]), ScriptedPolicy([Action.EXTERNAL]), CountingRewriter())
    agent = SpeechHands(
        omni, [FixedCaption("captioner", ["a man reads aloud"])], config=AgentConfig(trace_db=":memory:")
    )
    with VoiceAssistant(agent, _chat(["ok"])) as assistant:
        turn = assistant.turn(dev_flac(TURNS[0]), "Who is speaking?")
    assert turn.question == "Who is speaking?" and turn.transcript == "a man reads aloud"
    assert turn.action is Action.EXTERNAL and turn.cues is not None and turn.cues.speaking_rate_wps is None
    text = turn_message(turn)
    assert text.startswith("Who is speaking?\n\n(turn 1; a question about the audio")
    assert "the answer found in the audio (<external>, P=0.80): a man reads aloud" in text


def test_a_failing_chat_model_costs_the_reply_not_the_turn(tmp_path, shared_data):
    agent, _ = _agent(":memory:")
    with VoiceAssistant(agent, BrokenChat(messages=iter([]))) as assistant:
        turn = assistant.turn(dev_flac(TURNS[0]))
        messages = assistant.messages(turn.thread_id)
    assert turn.reply is None and turn.transcript == "base heard 1688-142285-0000"
    assert any("chat model failed (ConnectionError" in n for n in turn.notes)
    assert len(messages) == 1 and isinstance(messages[0], HumanMessage)


def test_a_chat_model_must_be_a_chat_model():
    agent, _ = _agent(":memory:")
    with pytest.raises(Exception, match="langchain-core chat model"):
        VoiceAssistant(agent, chat_model="qwen")


def test_a_long_turn_is_routed_segment_by_segment_with_the_prompt_and_traced(tmp_path, shared_data):
    import numpy as np
    from helpers import write_wav

    from speech_hands.audio import load_audio

    parts = [load_audio(dev_flac(uid)).samples for uid in ("1688-142285-0000", "1688-142285-0001", "1688-142285-0003")]
    long = write_wav(tmp_path / "long.wav", np.concatenate(parts))  # 34 s: over one Whisper window
    agent, internal = _agent(str(tmp_path / "t.sqlite"))
    with VoiceAssistant(agent, asr_context=True) as assistant:
        thread = assistant.new_thread()
        first = assistant.turn(dev_flac(TURNS[2]), thread_id=thread)
        turn = assistant.turn(long, thread_id=thread)
        trace = assistant.trace(thread)
    assert turn.segmented and turn.index == 2 and turn.action is Action.INTERNAL
    assert len(internal.prompts) >= 3 and set(internal.prompts[1:]) == {first.transcript}  # every segment
    assert trace.turn == 2 and trace.route[0] == "segment" and "stitch" in trace.route
    assert len(trace.segments) >= 2 and all("vote" in s.route for s in trace.segments)
    assert trace.result is not None and trace.result.answer == turn.transcript


def test_a_silent_turn_is_a_turn_that_heard_nothing(tmp_path):
    import numpy as np
    from helpers import write_wav

    silent = write_wav(tmp_path / "silence.wav", np.zeros(16_000, dtype=np.float32))
    agent, internal = _agent(":memory:")
    model = _chat(["are you there?"])
    with VoiceAssistant(agent, model) as assistant:
        turn = assistant.turn(silent)
    assert turn.action is None and turn.skipped_reason.startswith("silent audio") and internal.prompts == []
    assert turn.cues is not None and turn.cues.no_speech and turn.reply == "are you there?"
    assert model.received[0][-1].content.startswith("(turn 1; nothing was heard: silent audio")
    assert "cues: no speech detected" in model.received[0][-1].content
