"""Exit codes a script can rely on, through the real entry point (``python -m speech_hands.cli``):
0 answered, 1 some input got no answer, 2 nothing could run (one ``error:`` line). Inputs and the
trace database are checked before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from speech_hands.agent import SpeechHands
from speech_hands.cli import DEMO_SAMPLE, app


def speech_hands(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPEECH_HANDS_TRACE_DB": str(tmp_path / "traces.sqlite")}
    return subprocess.run(
        [sys.executable, "-m", "speech_hands.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_one_missing_file_is_an_error_line_and_status_2(tmp_path):
    done = speech_hands("transcribe", str(tmp_path / "missing.wav"), tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "not found" in done.stderr
    assert "Speech-Hands routing" not in done.stdout  # no table for a run that could not start


def test_one_corrupt_file_is_an_error_line_and_status_2(tmp_path):
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all" * 500)
    done = speech_hands("transcribe", str(corrupt), "--replay", str(_replay(tmp_path, "corrupt")), tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().startswith("error:")


def test_every_tool_failing_is_status_1_not_0(tmp_path):
    replay = _replay(tmp_path, "some-other-utterance")  # nothing recorded for this file: every tool fails
    done = speech_hands("transcribe", str(DEMO_SAMPLE), "--replay", str(replay), "--json", tmp_path=tmp_path)
    assert done.returncode == 1, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["answer"] == "" and "no tool produced a candidate" in line["skipped_reason"]


def test_an_unknown_model_is_refused_before_running(tmp_path):
    done = speech_hands(
        "transcribe", str(DEMO_SAMPLE), "--internal-model", str(tmp_path / "no-model"), tmp_path=tmp_path
    )
    assert done.returncode == 2 and "error:" in done.stderr and "no-model" in done.stderr


def test_inputs_are_checked_before_any_model_loads(tmp_path, monkeypatch):
    def loads_models(*args, **kwargs):
        raise AssertionError("models were loaded before the inputs were checked")

    monkeypatch.setattr(SpeechHands, "default", loads_models)
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["transcribe", str(tmp_path / "a.wav"), str(tmp_path / "b.wav")])
    assert (
        "not found" in str(result.exception) and "a.wav" in str(result.exception) and "b.wav" in str(result.exception)
    )
    assert time.perf_counter() - started < 60


def test_threads_on_a_missing_trace_database_is_an_error_and_creates_nothing(tmp_path):
    missing = tmp_path / "missing.sqlite"
    done = speech_hands("threads", "--trace-db", str(missing), tmp_path=tmp_path)
    assert done.returncode == 2 and "no trace database" in done.stderr
    assert not missing.exists()


def _replay(tmp_path: Path, utterance_id: str) -> Path:
    path = tmp_path / "replay.jsonl"
    record = {"id": utterance_id, "internal": ["hello"], "external": {"asr": ["hullo"]}}
    path.write_text(json.dumps(record) + "\n")
    return path
