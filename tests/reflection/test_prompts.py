"""Prompt templates follow the paper's structure and the SFT target format."""

import json

import pytest

from speech_hands.prompts import asr_reflection_prompt, audioqa_reflection_prompt, load_template, sft_target
from speech_hands.types import ACTION_TOKENS, Action


def test_asr_prompt_lists_hypotheses_in_order_then_internal(shared_data):
    case = json.loads((shared_data / "speech_hands_demo_cases.json").read_text())["asr"][1]
    prompt = asr_reflection_prompt(case["internal_prediction"], case["external_nbest"])
    for token in ACTION_TOKENS:
        assert token in prompt
    first, second = (prompt.index(f"{i}. {h}") for i, h in enumerate(case["external_nbest"], 1))
    assert first < second < prompt.rindex(case["internal_prediction"])
    assert "{" not in prompt  # every placeholder filled


def test_audioqa_prompt_has_question_options_and_both_predictions(shared_data):
    case = json.loads((shared_data / "speech_hands_demo_cases.json").read_text())["audio_qa"][0]
    prompt = audioqa_reflection_prompt(
        case["question"], case["choices"], case["external_prediction"], case["internal_prediction"]
    )
    assert f"Question: {case['question']}" in prompt
    assert all(f"- {c}" in prompt for c in case["choices"])
    assert prompt.index("External prediction") < prompt.index("Your first-pass prediction")


def test_sft_target_spacing():
    assert sft_target(Action.REWRITE, "now don t burst") == "<rewrite>now don t burst"
    assert sft_target(Action.EXTERNAL, "C. An earthquake", task="qa") == "<external> C. An earthquake"


def test_unknown_template():
    with pytest.raises(KeyError, match="available"):
        load_template("nope")
