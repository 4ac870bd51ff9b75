"""The GER rewriter's prompt, reply cleaning and fallback, over langchain-core's scripted chat model (the
LLM is not under test here; the real bundled model runs in tests/backends/extras/test_local_llm.py)."""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from speech_hands.audio import virtual_audio
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.ger import GERRewriter, clean_reply, ger_candidates
from speech_hands.types import Hypothesis, ToolOutput


def _inp() -> ReflectionInput:
    def out(tool: str, role: str, texts: list[str]) -> ToolOutput:
        hyps = [Hypothesis(text=t, score=-0.1 * i, source=tool, rank=i) for i, t in enumerate(texts)]
        return ToolOutput(tool=tool, role=role, hypotheses=hyps)

    internal = out("whisper-base", "internal", ["The cat sat.", "the cat sat", "The cat sad."])
    external = out("whisper-tiny.en", "external", ["A cat sat.", "The cat sat!"])
    return ReflectionInput(audio=virtual_audio("u1"), question=None, internal=internal, externals=[external])


def test_candidates_are_internal_first_and_listed_once_after_normalisation() -> None:
    assert ger_candidates(_inp()) == ["The cat sat.", "The cat sad.", "A cat sat."]


def test_reply_cleaning_removes_formatting_only() -> None:
    assert clean_reply('1. "The cat sat."\n\nExplanation: ...') == "The cat sat."
    assert clean_reply("Transcript: the cat sat") == "the cat sat"
    assert clean_reply("  \n- a dog barked  ") == "a dog barked"
    assert clean_reply("2 cats sat") == "2 cats sat"  # a number that is a word stays


def test_rewrite_sends_every_candidate_and_returns_the_cleaned_reply() -> None:
    chat = FakeListChatModel(responses=["1. The cat sat."])
    ger = GERRewriter(chat, name="scripted")
    prompt = ger.prompt(_inp())
    assert all(f"{i}. {t}" in prompt for i, t in enumerate(ger_candidates(_inp()), 1))
    out = ger.rewrite(_inp())
    assert out.text == "The cat sat." and out.source == "ger:scripted"


def test_an_empty_reply_keeps_the_current_answer_and_says_so() -> None:
    out = GERRewriter(FakeListChatModel(responses=["  \n"]), name="scripted").rewrite(_inp())
    assert out.text == "The cat sat." and out.source == "ger:scripted:empty-output-kept-current"
