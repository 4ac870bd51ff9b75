"""Non-speech given to a speech recogniser (rain, a dog bark, a DC offset, a clip too short for a
word) is answered with nothing and a traced reason, instead of the text Whisper invents for it; an
audio-QA agent, whose questions are about any sound, still perceives it. The voice-activity detector
is the real one (Silero, shipped in faster-whisper); the tools are doubles that record whether they ran."""

from __future__ import annotations

import numpy as np
import pytest
from doubles import CountingRewriter, FixedASR, FixedCaption, ScriptedPolicy
from helpers import SHARED_DATA, dev_flac

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.audio import audio_from_array, load_audio
from speech_hands.backends.composed import ComposedOmni

ESC10 = SHARED_DATA / "esc10"


def _agent(omni_predictor, externals, **config) -> SpeechHands:
    omni = ComposedOmni(omni_predictor, ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    return SpeechHands(omni, externals, config=AgentConfig(trace_db=":memory:", **config))


NON_SPEECH = {
    "rain": lambda: load_audio(ESC10 / "002 - Rain" / "1-17367-A.ogg"),
    "dog bark": lambda: load_audio(ESC10 / "001 - Dog bark" / "1-100032-A.ogg"),
    "dc offset": lambda: audio_from_array(np.full(3 * 16_000, 0.3, dtype=np.float32), 16_000),
    "50 ms of speech": lambda: audio_from_array(load_audio(dev_flac("533-1066-0000")).samples[16_000:16_800], 16_000),
}


@pytest.mark.parametrize("what", sorted(NON_SPEECH))
def test_non_speech_gets_no_transcript(what, shared_data):
    internal, external = FixedASR("internal-asr", ["bah"]), FixedASR("external-asr", ["you"])
    with _agent(internal, [external]) as agent:
        result = agent.invoke(NON_SPEECH[what]())
    assert result.answer == "" and result.action is None
    assert result.skipped_reason.startswith("no speech") and not internal.intervals and not external.intervals
    assert "prepare" in agent.trace(result.thread_id).route


def test_speech_is_still_transcribed(shared_data):
    with _agent(FixedASR("internal-asr", ["hello"]), [FixedASR("external-asr", ["hullo"])]) as agent:
        result = agent.invoke(dev_flac("533-1066-0000"))
    assert result.answer == "hello" and result.skipped_reason is None


def test_detection_can_be_turned_off(shared_data):
    with _agent(FixedASR("internal-asr", ["bah"]), [], detect_speech=False) as agent:
        result = agent.invoke(NON_SPEECH["rain"]())
    assert result.answer == "bah"


def test_audio_question_answering_hears_any_sound(shared_data):
    omni_answers = FixedCaption("omni", ["B. rain"])
    with _agent(omni_answers, [FixedCaption("af3", ["B. rain"])]) as agent:
        result = agent.invoke(NON_SPEECH["rain"](), "What is this sound?\nA. a dog\nB. rain")
    assert result.answer == "B. rain" and omni_answers.intervals
