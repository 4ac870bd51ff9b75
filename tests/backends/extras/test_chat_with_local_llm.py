"""``speech-hands chat`` with the real bundled Qwen2.5-0.5B as the chat model (extra ``llm``) over real
speech (espeak-ng, as tests/audio/test_cues.py makes it): a name said in turn 1 is recalled in turn 3,
which a second process plays after a restart, so the memory is the trace database's, not the process's.
Without turn 1 in the thread the model cannot know the name (the control)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from speech_hands.backends.local_llm import BUNDLED_QWEN

TURNS = ("Hello, my name is Peter and I live in Boston.", "What is the capital of France?")
RECALL = "Do you remember my name and where I live?"


def spoken(text: str, path: Path) -> str:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install -y espeak-ng; .ci/run does this)")
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    return str(path)


def chat(*args: str, db: Path) -> list[dict]:
    env = {**os.environ, "SPEECH_HANDS_TRACE_DB": str(db)}
    done = subprocess.run(
        [sys.executable, "-m", "speech_hands.cli", "chat", *args, "--json", "--chat-model", BUNDLED_QWEN],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


def test_the_bundled_chat_model_recalls_an_earlier_turn_after_a_restart(tmp_path):
    db = tmp_path / "traces.sqlite"
    files = [spoken(text, tmp_path / f"turn{i}.wav") for i, text in enumerate(TURNS, 1)]
    first = chat(*files, db=db)
    assert [t["turn"] for t in first] == [1, 2] and len({t["thread_id"] for t in first}) == 1
    assert "peter" in first[0]["transcript"].lower() and "paris" in first[1]["reply"].lower()
    thread = first[0]["thread_id"]

    recall = spoken(RECALL, tmp_path / "recall.wav")
    later = chat(recall, "--thread-id", thread, db=db)  # a new process: the history comes from the database
    assert [t["turn"] for t in later] == [3] and later[0]["thread_id"] == thread
    assert "peter" in later[0]["reply"].lower()
    alone = chat(recall, db=tmp_path / "other.sqlite")  # the control: a new thread has no name to recall
    assert "peter" not in alone[0]["reply"].lower()

    from speech_hands import SpeechHands, VoiceAssistant

    with VoiceAssistant(SpeechHands.default(trace_db=str(db)), owns_agent=True) as assistant:
        turns, messages = assistant.conversation(thread), assistant.messages(thread)
    assert [t.reply for t in turns] == [t["reply"] for t in [*first, *later]]
    assert [m.content for m in messages if m.type == "ai"] == [t["reply"] for t in [*first, *later]]
