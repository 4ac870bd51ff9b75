"""``transcribe --format txt|json|srt|vtt`` (and ``--output-dir``) with the real bundled Whisper models, on
the bundled sample and on long real speech (three dev utterances concatenated, routed segment by segment)."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from helpers import dev_flac, write_wav
from typer.testing import CliRunner

from speech_hands.audio import load_audio
from speech_hands.cli import DEMO_SAMPLE, app
from speech_hands.errors import SpeechHandsError

runner = CliRunner()
CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)([,.])(\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)$", re.M)


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, shared_data):
    uids = ["2609-156975-0007", "2033-164914-0008", "1688-142285-0007"]
    samples = np.concatenate([load_audio(dev_flac(u)).samples for u in uids])
    return write_wav(tmp_path_factory.mktemp("cli-long") / "long.wav", samples)


def test_txt_srt_vtt_of_a_short_file(tmp_path):
    db = ["--trace-db", str(tmp_path / "t.sqlite")]
    txt = runner.invoke(app, ["transcribe", str(DEMO_SAMPLE), "--format", "txt", *db])
    assert txt.exit_code == 0, txt.output
    assert txt.output.count("\n") == 1 and "extend the period" in txt.output.lower()
    srt = runner.invoke(app, ["transcribe", str(DEMO_SAMPLE), "-f", "srt", *db])
    assert srt.exit_code == 0 and srt.output.startswith("1\n00:00:00,000 --> 00:00:")
    assert srt.output.strip().split("\n")[2] == txt.output.strip()
    vtt = runner.invoke(app, ["transcribe", str(DEMO_SAMPLE), "-f", "vtt", *db])
    assert vtt.exit_code == 0 and vtt.output.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:")


def test_srt_and_json_of_long_audio_have_every_segment(tmp_path, long_wav):
    db = ["--trace-db", str(tmp_path / "t.sqlite"), "--policy", "confidence"]
    srt = runner.invoke(app, ["transcribe", str(long_wav), "--format", "srt", *db])
    assert srt.exit_code == 0, srt.output
    cues = [m.groups() for m in CUE.finditer(srt.output)]
    assert len(cues) >= 3 and all(c[3] == "," for c in cues)
    spans = [(_seconds(*c[0:3], c[4]), _seconds(*c[5:9])) for c in cues]
    assert spans[0][0] == 0 and all(a[1] <= b[0] and b[0] < b[1] for a, b in itertools.pairwise(spans))
    assert spans[-1][1] > 40
    line = runner.invoke(app, ["transcribe", str(long_wav), "--json", *db])
    data = json.loads(line.output.strip().splitlines()[-1])
    assert len(data["segments"]) == len(cues)
    assert [round(s["start"], 3) for s in data["segments"]] == [round(a, 3) for a, _ in spans]
    assert all(s["action"] in ("internal", "external", "rewrite") for s in data["segments"])
    assert data["answer"] == " ".join(s["text"] for s in data["segments"])
    shown = runner.invoke(app, ["trace", data["thread_id"], "--trace-db", db[1]])
    assert shown.exit_code == 0, shown.output
    assert "route_segment" in shown.output and "Route of every segment" in shown.output
    as_json = json.loads(runner.invoke(app, ["trace", data["thread_id"], "--json", "--trace-db", db[1]]).output)
    assert [t["action"] for t in as_json["segments"]] == [s["action"] for s in data["segments"]]


def test_output_dir_writes_one_document_per_file(tmp_path):
    copy = tmp_path / "copy.flac"
    copy.write_bytes(DEMO_SAMPLE.read_bytes())
    out = tmp_path / "out"
    done = runner.invoke(
        app, ["transcribe", str(DEMO_SAMPLE), str(copy), "-f", "vtt", "-o", str(out), "--trace-db", ":memory:"]
    )
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{DEMO_SAMPLE.stem}.vtt", "copy.vtt"])
    assert all(p.read_text().startswith("WEBVTT\n") for p in out.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "docx"], "--format must be"),
        (["-f", "srt", "EXTRA"], "needs --output-dir"),
        (["-o", "somewhere"], "--output-dir writes documents"),
    ],
)
def test_format_usage_errors_come_before_any_model_loads(tmp_path, args, message):
    args = [str(tmp_path / "b.wav") if a == "EXTRA" else a for a in args]
    done = runner.invoke(app, ["transcribe", str(DEMO_SAMPLE), *args, "--trace-db", ":memory:"])
    assert isinstance(done.exception, SpeechHandsError) and message in str(done.exception)
