"""`speech-hands threads` / `trace` filters and `--diff`, `export-html`'s data and `speech-hands ui`'s
life cycle, over the traces of a real `eval run` (conftest.py) and of a plain replay run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers import dev_flac
from typer.testing import CliRunner

from speech_hands import SpeechHands
from speech_hands.cli import app
from speech_hands.datasets.builtin import librispeech_dev, replay_from_systems
from speech_hands.errors import SpeechHandsError

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def _page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', text, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def test_threads_filters_list_exactly_the_matching_runs(eval_run):
    db = str(eval_run.db)
    results, gold = eval_run.results, eval_run.gold()
    cases = {
        ("--action", "rewrite"): {r.thread_id for r in results if r.action.value == "rewrite"},
        ("--action", "external"): {r.thread_id for r in results if r.action.value == "external"},
        ("--low-confidence", "0.6"): {r.thread_id for r in results if r.probs[r.first_action] < 0.6},
        ("--dataset", "librispeech-b"): {r.thread_id for r in results if r.dataset == "librispeech-b"},
        ("--mismatch",): {r.thread_id for r in results if r.first_action.value != gold[r.id]},
    }
    everything = {r.thread_id for r in results}
    for args, expected in cases.items():
        assert expected and expected != everything, args
        result = _invoke("threads", "--trace-db", db, *args)
        assert result.exit_code == 0, result.output
        listed = {t for t in everything if t in result.output}
        assert listed == expected, args
        assert f"{len(expected)} of {len(results)} runs match" in result.output
    plain = _invoke("threads", "--trace-db", db)  # no filter: the ids, newest first
    assert plain.output.split() == [r.thread_id for r in reversed(results)]


def test_trace_with_filters_and_diff_against_the_reference(eval_run):
    rewrites = [r for r in eval_run.results if r.action.value == "rewrite"]
    result = _invoke("trace", "--trace-db", str(eval_run.db), "--action", "rewrite", "--diff")
    assert result.exit_code == 0, result.output
    for r in rewrites:
        assert r.thread_id in result.output
    others = [r for r in eval_run.results if r.action.value != "rewrite"]
    assert not any(r.thread_id in result.output for r in others)
    assert result.output.count("Word diff against the reference") == len(rewrites)
    # a substitution shows as [-reference-]{+candidate+}: item 0's internal says "their zyon" for "there's iron"
    first = eval_run.results[0]
    one = _invoke("trace", first.thread_id, "--trace-db", str(eval_run.db), "--diff")
    assert one.exit_code == 0, one.output
    assert "[-there is-]{+their zyon+}" in one.output and "[-iron-]" in one.output
    as_json = json.loads(_invoke("trace", "--trace-db", str(eval_run.db), "--action", "rewrite", "--json").output)
    assert {t["thread_id"] for t in as_json} == {r.thread_id for r in rewrites}


def test_trace_diff_without_a_report_diffs_against_the_internal_prediction(shared_data, tmp_path):
    manifest = librispeech_dev(shared_data).select(limit=1)
    store = replay_from_systems(manifest, "b1.rnnt_baseline", ["s4.s3+nnlm.biasing_100"])
    db = str(tmp_path / "plain.sqlite")
    with SpeechHands.from_replay(store, trace_db=db) as agent:
        result = agent.invoke(manifest.audio_path(manifest.items[0]))
    out = _invoke("trace", result.thread_id, "--trace-db", db, "--diff")
    assert out.exit_code == 0, out.output
    assert "against the internal prediction" in out.output
    assert "[-their zyon-]{+the zion+}" in out.output  # the external candidate vs the internal one
    needs_report = _invoke("trace", "--trace-db", db, "--wrong")
    assert isinstance(needs_report.exception, SpeechHandsError) and "--report" in str(needs_report.exception)
    neither = _invoke("trace", "--trace-db", db)
    assert isinstance(neither.exception, SpeechHandsError) and "THREAD" in str(neither.exception)
    both = _invoke("trace", result.thread_id, "--trace-db", db, "--action", "internal")
    assert isinstance(both.exception, SpeechHandsError)
    bad = _invoke("threads", "--trace-db", db, "--action", "nonsense")
    assert isinstance(bad.exception, SpeechHandsError)
    page = tmp_path / "plain.html"
    assert _invoke("export-html", "--trace-db", db, "--out", str(page)).exit_code == 0
    (run,) = _page_data(page)["runs"]
    assert run["reference"] is None and run["gold_action"] is None and run["diff_against"] == "internal"
    assert run["audio_src"] == manifest.audio_path(manifest.items[0]).as_uri()


def test_export_html_embeds_every_run_and_finds_the_report_beside_the_db(eval_run, tmp_path):
    found, given = tmp_path / "found.html", tmp_path / "given.html"
    assert _invoke("export-html", "--trace-db", str(eval_run.db), "--out", str(found)).exit_code == 0
    args = ["export-html", "--trace-db", str(eval_run.db), "--out", str(given), "--report", str(eval_run.folder)]
    assert _invoke(*args).exit_code == 0
    runs = _page_data(found)["runs"]
    assert runs == _page_data(given)["runs"]
    by_thread = {run["thread_id"]: run for run in runs}
    assert list(by_thread) == [r.thread_id for r in reversed(eval_run.results)]  # newest first
    for r in eval_run.results:
        run = by_thread[r.thread_id]
        assert (run["action"], run["decision"], run["dataset"]) == (r.action.value, r.first_action.value, r.dataset)
        assert run["reference"] == r.reference and run["gold_action"] == eval_run.gold()[r.id]
        tools = [c.tool for c in sorted(r.candidates, key=lambda c: c.role != "internal")]
        assert [c["tool"] for c in run["candidates"]] == tools
        assert run["audio_src"] == Path(r.audio).as_uri()
    text = found.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text


def test_the_page_data_cannot_close_its_script_element(shared_data, tmp_path):
    from speech_hands.backends.replay import RecordedHypothesis, ReplayRecord, ReplayStore

    hostile = "</script><script>window.owned = 1</script><!-- and then the words of an ordinary sentence"
    audio = dev_flac("1688-142285-0000")
    record = ReplayRecord(
        id=audio.stem, internal=[RecordedHypothesis(text="a b c")], external={"asr": [RecordedHypothesis(text=hostile)]}
    )
    db = str(tmp_path / "t.sqlite")
    with SpeechHands.from_replay(ReplayStore([record]), trace_db=db) as agent:
        agent.invoke(audio)
    page = tmp_path / "p.html"
    assert _invoke("export-html", "--trace-db", db, "--out", str(page)).exit_code == 0
    data = _page_data(page)
    assert data["runs"][0]["candidates"][1]["hypotheses"][0]["text"] == hostile


def test_ui_prints_its_url_serves_and_stops_on_ctrl_c(eval_run):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    # Ctrl-C must reach the command even when this test runs in the background: a shell starts
    # background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN (no KeyboardInterrupt)
    cli = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from speech_hands.cli import main; main()"
    cmd = [sys.executable, "-c", cli, "ui", "--trace-db", str(eval_run.db), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, line + proc.stdout.read() if proc.poll() is not None else line
        with urllib.request.urlopen(match.group(0), timeout=30) as response:
            body = response.read().decode()
        assert all(r.thread_id in body for r in eval_run.results)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_viewer_commands_need_an_existing_trace_db(tmp_path):
    for command in (["export-html", "--out", str(tmp_path / "x.html")], ["ui"]):
        result = _invoke(*command, "--trace-db", str(tmp_path / "none.sqlite"))
        assert isinstance(result.exception, SpeechHandsError) and "no trace database" in str(result.exception)
