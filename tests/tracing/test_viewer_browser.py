"""The trace viewer in a real headless Chromium, over the traces of a real `eval run` (see conftest.py):
the page `export-html` writes and the one `speech-hands ui` serves show each run's action, decision,
gold action, probabilities, every tool's candidates, the vote, the rewrites, the route and the notes;
every filter selects exactly the runs it should; the audio element plays the run's own file."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

import jiwer
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speech_hands.agent.speech_hands import open_checkpointer
from speech_hands.cli import app
from speech_hands.graphs.routing import graph_shape
from speech_hands.text import normalize_english
from speech_hands.tracing.runs import load_catalog
from speech_hands.tracing.server import ViewerServer

runner = CliRunner()


def _export(eval_run, out: Path, *extra: str) -> Path:
    result = runner.invoke(app, ["export-html", "--trace-db", str(eval_run.db), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out


def _shown(page) -> set[str]:
    return set(page.eval_on_selector_all("tr.run", "rows => rows.map(r => r.dataset.thread)"))


def _open(page, url: str) -> list[str]:
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    page.wait_for_selector("tr.run")
    return requests


def _audio_duration(page) -> float:
    page.wait_for_function("() => { const a = document.querySelector('audio#audio'); return a && a.readyState >= 1; }")
    return page.evaluate("document.querySelector('audio#audio').duration")


def test_export_html_shows_every_runs_action_candidates_and_audio(eval_run, page, tmp_path):
    out = _export(eval_run, tmp_path / "viewer.html")
    requests = _open(page, out.as_uri())
    results = eval_run.results
    assert _shown(page) == {r.thread_id for r in results}
    assert page.inner_text("#count") == f"{len(results)} of {len(results)} runs"
    gold = eval_run.gold()
    assert any(r.action != r.first_action for r in results)  # the final action and the decision can differ
    for r in results:
        page.click(f'tr.run[data-thread="{r.thread_id}"]')
        detail = page.locator("#detail")
        assert detail.locator("[data-field=action]").inner_text() == r.action.value
        assert detail.locator("[data-field=decision]").inner_text() == r.first_action.value
        assert detail.locator("[data-field=gold]").inner_text() == gold[r.id]
        assert detail.locator("[data-field=reference]").inner_text() == r.reference
        assert page.get_attribute(f'tr.run[data-thread="{r.thread_id}"]', "data-action") == r.action.value
        # the three probabilities of the first-token decision
        for action, p in r.probs.items():
            row = detail.locator(f".probs[data-round='0'] [data-prob='{action.value}']")
            assert f"{p:.3f}" in row.inner_text()
        # every tool side by side, internal first, each with all its candidates (or its error)
        tools = page.eval_on_selector_all(".candidate", "cols => cols.map(c => c.dataset.tool)")
        assert tools == [c.tool for c in sorted(r.candidates, key=lambda c: c.role != "internal")]
        for c in r.candidates:
            column = detail.locator(f'.candidate[data-tool="{c.tool}"]')
            texts = column.locator(".hyp[data-text]").evaluate_all("hs => hs.map(h => h.dataset.text)")
            assert texts == [h.text for h in c.hypotheses]
            if c.error is not None:
                assert c.error.message in column.inner_text()
                assert c.tool in detail.locator("#notes").inner_text()
        # k = 3: one tally per round; the rewrites; the route drawn over the graph
        assert detail.locator("table.votes").count() == r.rewrite_count + 1
        assert detail.locator("tr.rewrite").count() == r.rewrite_count
        visited = set(page.eval_on_selector_all("#graph g.node.visited", "gs => gs.map(g => g.dataset.node)"))
        assert ("rewrite" in visited) == (r.rewrite_count > 0)
        assert {"prepare", "perceive", "gather", "reflect", "vote", "finish"} <= visited
        assert f"use_{r.action.value}" in visited or r.action.value == "rewrite"
        assert detail.locator("#latency tbody tr").count() >= 7
        # the audio element links the run's own file, and Chromium loads it
        assert page.get_attribute("audio#audio", "src") == Path(r.audio).as_uri()
        assert _audio_duration(page) == pytest.approx(sf.info(r.audio).duration, abs=0.05)
    page.click(f'tr.run[data-thread="{results[6].thread_id}"]')  # a rewrite, a vote, a spent budget
    page.set_viewport_size({"width": 1400, "height": 1500})
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
    assert all(url.startswith("file://") for url in requests), requests  # self-contained: no network
    assert page.errors == []


def test_every_filter_selects_exactly_its_runs(eval_run, page, tmp_path):
    _open(page, _export(eval_run, tmp_path / "viewer.html").as_uri())
    results = eval_run.results
    gold = eval_run.gold()
    everything = {r.thread_id for r in results}

    def wrong(r) -> bool:
        return jiwer.wer(normalize_english(r.reference), normalize_english(r.prediction)) > 0

    expected = {
        "rewrite": {r.thread_id for r in results if r.action.value == "rewrite"},
        "external": {r.thread_id for r in results if r.action.value == "external"},
        "dataset": {r.thread_id for r in results if r.dataset == "librispeech-b"},
        "wrong": {r.thread_id for r in results if wrong(r)},
        "mismatch": {r.thread_id for r in results if r.first_action.value != gold[r.id]},
        "low": {r.thread_id for r in results if r.probs[r.first_action] < 0.6},
        "high-threshold": {r.thread_id for r in results if r.probs[r.first_action] < 0.7},
    }
    for name, threads in expected.items():  # each filter must narrow the list, or it proves nothing
        assert threads and threads != everything, name

    page.select_option("#filter-action", "rewrite")
    assert _shown(page) == expected["rewrite"]
    page.select_option("#filter-action", "external")
    assert _shown(page) == expected["external"]
    page.select_option("#filter-action", "")
    assert _shown(page) == everything

    page.select_option("#filter-dataset", "librispeech-b")
    assert _shown(page) == expected["dataset"]
    page.select_option("#filter-dataset", "")

    page.check("#filter-wrong")
    assert _shown(page) == expected["wrong"]
    page.uncheck("#filter-wrong")

    page.check("#filter-mismatch")
    assert _shown(page) == expected["mismatch"]
    page.check("#filter-wrong")  # filters combine
    assert _shown(page) == expected["mismatch"] & expected["wrong"]
    page.uncheck("#filter-wrong")
    page.uncheck("#filter-mismatch")

    page.check("#filter-lowconf")
    assert _shown(page) == expected["low"]
    page.fill("#filter-threshold", "0.7")
    assert _shown(page) == expected["high-threshold"]
    assert page.inner_text("#count") == f"{len(expected['high-threshold'])} of {len(results)} runs"
    page.uncheck("#filter-lowconf")

    some = results[3]
    page.fill("#filter-text", some.id)
    assert _shown(page) == {some.thread_id}
    # the detail follows the list: the only visible run is the one shown
    assert page.inner_text("#detail h2").startswith(some.id)
    assert page.errors == []


def test_ui_serves_the_page_and_only_the_audio_the_traces_reference(eval_run, page):
    graph = graph_shape().compile(checkpointer=open_checkpointer(str(eval_run.db)))
    server = ViewerServer(lambda: load_catalog(graph, trace_db=str(eval_run.db), reports=[eval_run.folder]))
    assert server.url.startswith("http://127.0.0.1:")
    with server:
        _open(page, server.url)
        r = eval_run.results[0]
        page.click(f'tr.run[data-thread="{r.thread_id}"]')
        assert page.inner_text("#detail [data-field=action]") == r.action.value
        src = page.evaluate("document.querySelector('audio#audio').src")
        assert src.startswith(server.url + "audio/") and src.endswith(".flac")
        assert _audio_duration(page) == pytest.approx(sf.info(r.audio).duration, abs=0.05)
        audio = Path(r.audio).read_bytes()
        with urllib.request.urlopen(src) as response:
            assert response.headers["Content-Type"] == "audio/flac" and response.read() == audio
        ranged = urllib.request.Request(src, headers={"Range": "bytes=100-199"})
        with urllib.request.urlopen(ranged) as response:
            assert response.status == 206 and response.read() == audio[100:200]
        for bad in ("audio/" + "0" * 20 + ".flac", "audio/../../../etc/passwd", "etc/passwd", "data.json"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(server.url + bad)
            assert err.value.code == 404
        host, port = server.httpd.server_address[:2]
        conn = http.client.HTTPConnection(host, port)
        conn.request("GET", "/audio/..%2F..%2Fetc%2Fpasswd")
        assert conn.getresponse().status == 404
        conn.close()
        page.reload()
        page.wait_for_selector("tr.run")
        data = json.loads(page.text_content("#viewer-data"))
        assert {run["thread_id"] for run in data["runs"]} == {x.thread_id for x in eval_run.results}
        assert page.errors == []
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)
