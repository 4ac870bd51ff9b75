"""Prompt templates: the only place prompt text lives.

The structure follows the Speech-Hands paper (docs/method.md section 2): a role line, the numbered inputs,
one bullet per action token saying when to emit it and that the answer follows it, then the candidate
list and the model's own first pass. The wording is ours. Templates are plain text files beside this
module so they can be read, diffed and overridden without touching code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib import resources

from speech_hands.types import Action

TEMPLATES = (
    "asr_reflection",
    "audioqa_reflection",
    # generative error correction (speech_hands.reflection.ger): a chat LLM writes the transcript from the N-best
    "asr_ger",
    # first-pass prompts for model backends (the omni model's own prediction, an audio captioner)
    "asr_transcription",
    "audioqa_answer",
    "audio_caption",
    "audio_question",
    # the JASCO co-reasoning judge (speech_hands.evals.jasco) and its orientation re-ask
    "jasco_judge",
    "jasco_reformat",
    # the voice assistant's system message (speech_hands.graphs.assistant)
    "assistant_system",
)

#: An option line of a multiple-choice question: "A. text", "(B) text", "- C) text".
_OPTION = re.compile(r"^\s*(?:[-*]\s*)?\(?[A-Z][.)]\s*\S")


@cache
def load_template(name: str) -> str:
    """The raw text of a template by name (one of :data:`TEMPLATES`)."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; available: {', '.join(TEMPLATES)}")
    return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


def _tokens() -> dict[str, str]:
    return {f"{a.value}_token": a.token for a in Action}


def asr_reflection_prompt(internal: str, hypotheses: Sequence[str]) -> str:
    """The ASR reflection prompt: numbered external N-best, then the model's own transcript."""
    listing = "\n".join(f"{i}. {h}" for i, h in enumerate(hypotheses, 1)) or "(none)"
    return load_template("asr_reflection").format(hypotheses=listing, internal=internal, **_tokens()).strip()


def asr_ger_prompt(hypotheses: Sequence[str]) -> str:
    """The GER prompt: every candidate transcript, numbered, the most likely first."""
    listing = "\n".join(f"{i}. {h}" for i, h in enumerate(hypotheses, 1)) or "(none)"
    return load_template("asr_ger").format(hypotheses=listing).strip()


def audioqa_reflection_prompt(question: str, options: Sequence[str], external: str, internal: str) -> str:
    """The AudioQA reflection prompt: question, one option per line ("- A. ..."), both predictions."""
    listing = "\n".join(f"- {o}" for o in options)
    return (
        load_template("audioqa_reflection")
        .format(question=question, options=listing, external=external, internal=internal, **_tokens())
        .strip()
    )


def sft_target(action: Action, answer: str, *, task: str = "asr") -> str:
    """The fine-tuning target: action token then the gold text (no space for ASR, one space for QA)."""
    separator = "" if task == "asr" else " "
    return f"{action.token}{separator}{answer}"


def split_question(question: str) -> tuple[str, list[str]]:
    """Split an AudioQA question into its stem and its options.

    The graph carries a question as one string; AudioQA inputs (the replay records, the CLI) append the
    options to it one per line (``"A. Near the end"``). Lines that look like options become the option
    list; every other line belongs to the stem. A question without option lines is open-ended."""
    stem, options = [], []
    for line in question.splitlines():
        if _OPTION.match(line):
            options.append(line.strip().lstrip("-* ").strip())
        elif line.strip():
            stem.append(line.strip())
    return " ".join(stem), options


def asr_transcription_prompt() -> str:
    """The first-pass transcription request (the omni model's own, *internal*, prediction)."""
    return load_template("asr_transcription").strip()


def audioqa_answer_prompt(question: str) -> str:
    """The first-pass AudioQA request: a multiple-choice question, or an open question when the
    question has no option lines."""
    stem, options = split_question(question)
    if not options:
        return load_template("audio_question").format(question=stem).strip()
    listing = "\n".join(f"- {o}" for o in options)
    return load_template("audioqa_answer").format(question=stem, options=listing).strip()


def audio_caption_prompt(question: str | None = None) -> str:
    """What a captioner / audio-QA tool (Audio Flamingo 3) is asked: a caption, or the question."""
    if question is None or not question.strip():
        return load_template("audio_caption").strip()
    return audioqa_answer_prompt(question)


def assistant_system_prompt() -> str:
    """The voice assistant's system message: what a user turn holds, and that the cues are measurements."""
    return load_template("assistant_system").strip()
