"""The command line on the bundled real sample with the real bundled Whisper models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from speech_hands.cli import DEMO_SAMPLE, app
from speech_hands.types import ACTION_TOKENS

runner = CliRunner()


def test_transcribe_json_then_trace_and_threads(tmp_path):
    db = str(tmp_path / "traces.sqlite")
    result = runner.invoke(app, ["transcribe", str(DEMO_SAMPLE), "--json", "--trace-db", db])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["file"] == str(DEMO_SAMPLE) and "extend the period" in line["answer"].lower()
    assert f"<{line['action']}>" in ACTION_TOKENS
    assert {c["role"] for c in line["candidates"]} == {"internal", "external"}
    assert sum(line["reflection"]["probs"].values()) == pytest.approx(1.0)
    threads = runner.invoke(app, ["threads", "--trace-db", db])
    assert line["thread_id"] in threads.output
    trace = runner.invoke(app, ["trace", line["thread_id"], "--trace-db", db])
    assert trace.exit_code == 0, trace.output
    assert "perceive" in trace.output and "vote" in trace.output and "finish" in trace.output
    as_json = json.loads(runner.invoke(app, ["trace", line["thread_id"], "--json", "--trace-db", db]).output)
    assert as_json["result"]["answer"] == line["answer"]


def test_transcribe_table_and_a_missing_file(tmp_path):
    db = str(tmp_path / "traces.sqlite")
    result = runner.invoke(app, ["transcribe", str(DEMO_SAMPLE), str(tmp_path / "missing.wav"), "--trace-db", db])
    assert result.exit_code == 1
    assert "not found" in result.output and "1 of 2 file(s) failed" in result.output
    assert "Speech-Hands routing" in result.output


def test_trace_of_unknown_thread_is_a_clear_error(tmp_path):
    db = tmp_path / "traces.sqlite"
    runner.invoke(app, ["transcribe", str(DEMO_SAMPLE), "--trace-db", str(db), "--json"])
    result = runner.invoke(app, ["trace", "no-such-thread", "--trace-db", str(db)])
    assert result.exit_code != 0 and "no trace for thread" in str(result.exception)


def test_graph_prints_the_state_machine():
    result = runner.invoke(app, ["graph"])
    assert result.exit_code == 0
    for node in ("perceive", "reflect", "vote", "use_internal", "use_external", "rewrite", "finish"):
        assert node in result.output


def test_transcribe_with_another_policy_or_a_trained_artifact(tmp_path):
    """--policy picks the baseline; --reflector loads an artifact from train-reflector (here the shipped
    default one with a hotter temperature: the same decision, visibly flatter probabilities), or the
    shipped full one by name."""
    from speech_hands.reflection.learned.policy import FAST_ARTIFACT, SHIPPED_DIR

    db = str(tmp_path / "traces.sqlite")

    def reflection(*options: str) -> dict:
        result = runner.invoke(app, ["transcribe", str(DEMO_SAMPLE), "--json", "--trace-db", db, *options])
        assert result.exit_code == 0, result.output
        return json.loads(result.output.strip().splitlines()[-1])["reflection"]

    learned, baseline = reflection(), reflection("--policy", "confidence")
    assert (learned["policy"], baseline["policy"]) == ("learned-reflector", "confidence-baseline")

    artifact = json.loads((SHIPPED_DIR / FAST_ARTIFACT).read_text(encoding="utf-8"))
    artifact["temperature"] *= 4
    hotter = tmp_path / "hotter.json"
    hotter.write_text(json.dumps(artifact), encoding="utf-8")
    custom = reflection("--reflector", str(hotter))
    assert custom["action"] == learned["action"]
    assert max(custom["probs"].values()) < max(learned["probs"].values())
    full = reflection("--reflector", "full")  # the scoring-pass artifact, by name
    assert full["policy"] == "learned-reflector" and "expected errors per word" in full["rationale"]

    missing = runner.invoke(
        app, ["transcribe", str(DEMO_SAMPLE), "--reflector", str(tmp_path / "none.json"), "--trace-db", db]
    )
    assert missing.exit_code != 0
    assert "reflector artifact not found" in str(missing.exception) + missing.output
