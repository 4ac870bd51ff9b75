"""``speech-hands chat`` through the real entry point with the real bundled Whisper models: three
turns of one thread, then a second process continues the thread and reads the earlier turns back;
the exit codes of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import dev_flac

TURNS = ["2609-156975-0000", "2609-156975-0001", "2609-156975-0002"]


def speech_hands(*args: str, db: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPEECH_HANDS_TRACE_DB": str(db)}
    return subprocess.run(
        [sys.executable, "-m", "speech_hands.cli", *args], capture_output=True, text=True, timeout=600, env=env
    )


def _lines(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


@pytest.mark.slow
def test_three_turns_of_one_thread_then_a_new_process_continues_it(tmp_path, shared_data, dev_references):
    db = tmp_path / "traces.sqlite"
    files = [str(dev_flac(uid)) for uid in TURNS]
    first = _lines(speech_hands("chat", *files, "--json", "--trace-db", str(db), db=db))
    assert [t["turn"] for t in first] == [1, 2, 3] and len({t["thread_id"] for t in first}) == 1
    for line, uid in zip(first, TURNS):
        assert set(line) >= {"turn", "thread_id", "transcript", "action", "probabilities", "cues", "reply"}
        assert line["reply"] is None and line["action"] in ("internal", "external", "rewrite")
        assert sum(line["probabilities"].values()) == pytest.approx(1.0)
        assert line["cues"]["speaking_rate_wps"] > 1.0 and line["cues"]["loudness_dbfs"] < 0
        reference = dev_references[uid].split()
        heard = line["transcript"].lower()
        assert sum(w in heard for w in reference) > 0.6 * len(reference)  # real Whisper on real speech
    thread = first[0]["thread_id"]

    more = str(dev_flac("2609-156975-0003"))
    second = _lines(speech_hands("chat", more, "--thread-id", thread, "--json", "--trace-db", str(db), db=db))
    assert [t["turn"] for t in second] == [4] and second[0]["thread_id"] == thread

    trace = speech_hands("trace", thread, "--json", "--trace-db", str(db), db=db)
    assert trace.returncode == 0, trace.stderr
    read = json.loads(trace.stdout)
    assert read["turn"] == 4 and [t["index"] for t in read["turns"]] == [1, 2, 3, 4]
    assert [t["transcript"] for t in read["turns"][:3]] == [t["transcript"] for t in first]  # intact
    assert read["result"]["answer"] == second[0]["transcript"] and "vote" in read["turns"][0]["steps"][-3]["nodes"]
    table = speech_hands("trace", thread, "--trace-db", str(db), db=db)
    assert "Conversation (4 turns" in table.stdout and "perceive" in table.stdout


def test_a_missing_file_alone_is_status_2(tmp_path):
    done = speech_hands("chat", str(tmp_path / "missing.flac"), db=tmp_path / "t.sqlite")
    assert done.returncode == 2 and done.stderr.strip().startswith("error:") and "not found" in done.stderr


def test_an_empty_question_is_status_2(tmp_path, shared_data):
    done = speech_hands("chat", f"{dev_flac(TURNS[0])}::", db=tmp_path / "t.sqlite")
    assert done.returncode == 2 and "FILE::QUESTION" in done.stderr


def test_a_chat_model_that_cannot_load_is_status_2_before_any_turn(tmp_path, shared_data):
    done = speech_hands("chat", str(dev_flac(TURNS[0])), "--chat-model", str(tmp_path / "no-model"), db=tmp_path / "t")
    assert done.returncode == 2 and done.stderr.strip().startswith("error:")
    said = " ".join(done.stderr.split())  # rich wraps long lines
    # without the extra the loader names it (bracket included: the error line is not read as rich markup);
    # with it, the model folder that does not exist
    assert "pip install 'speech-hands[llm]'" in said or "no-model" in said
    assert not done.stdout.strip()


@pytest.mark.slow
def test_a_question_to_a_speech_only_agent_is_status_2(tmp_path, shared_data):
    done = speech_hands("chat", f"{dev_flac(TURNS[0])}::who speaks?", db=tmp_path / "t.sqlite")
    assert done.returncode == 2 and "cannot answer a question" in " ".join(done.stderr.split())
    assert done.stderr.strip().startswith("error:")  # refused before any turn ran


@pytest.mark.slow
def test_one_unreadable_turn_among_good_ones_is_status_1(tmp_path, shared_data):
    db = tmp_path / "t.sqlite"
    done = speech_hands("chat", str(dev_flac(TURNS[0])), str(tmp_path / "gone.flac"), "--json", db=db)
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert lines[0]["turn"] == 1 and "not found" in lines[1]["error"]


@pytest.mark.slow
def test_chat_model_spec_goes_to_the_shared_loader_and_replies_reach_the_json(tmp_path, shared_data, monkeypatch):
    """The loader (speech_hands.backends.local_llm, another module's job) is stood in for by a module that
    returns langchain-core's GenericFakeChatModel: what is under test is the command's wiring."""
    import types
    from itertools import cycle

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from typer.testing import CliRunner

    from speech_hands.cli import app

    asked: list[str] = []

    def load_chat_model(spec: str):
        asked.append(spec)
        return GenericFakeChatModel(messages=cycle([AIMessage(content="noted"), AIMessage(content="and that")]))

    fake = types.ModuleType("speech_hands.backends.local_llm")
    fake.load_chat_model = load_chat_model
    monkeypatch.setitem(sys.modules, "speech_hands.backends.local_llm", fake)
    files = [str(dev_flac(uid)) for uid in TURNS[:2]]
    db = str(tmp_path / "t.sqlite")
    done = CliRunner().invoke(app, ["chat", *files, "--chat-model", "bundled:qwen2.5-0.5b", "--json", "--trace-db", db])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in done.output.strip().splitlines() if line.startswith("{")]
    assert asked == ["bundled:qwen2.5-0.5b"] and [t["reply"] for t in lines] == ["noted", "and that"]
    again = ["chat", files[0], "--chat-model", "x", "--thread-id", lines[0]["thread_id"], "--trace-db", db]
    text = CliRunner().invoke(app, again)
    assert text.exit_code == 0 and "turn 3" in text.output and "assistant:" in text.output and "cues:" in text.output
