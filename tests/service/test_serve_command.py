"""``speech-hands serve`` as a user runs it: the real command in a subprocess on a free loopback port,
the REAL default agent (Whisper base + tiny.en, the shipped reflector) on real LibriSpeech speech,
driven with the real ``openai`` Python client; and the command's exit status for bad options."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import REPO, dev_flac
from loopback import free_port, server_process

UTT = "1688-142285-0007"
KEY = "test-key-18"


def serve_command(*options: str) -> list[str]:
    return [sys.executable, "-m", "speech_hands.cli", "serve", *options]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server with a key and a 1 MiB upload limit; its TMPDIR is a folder of its own (checked empty
    at the end: no audio is written to disk). Stopped at the end whatever happens."""
    folder = tmp_path_factory.mktemp("serve")
    tmpdir = folder / "tmp"
    tmpdir.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "TMPDIR": str(tmpdir),
        "SPEECH_HANDS_API_KEY": KEY,
        "SPEECH_HANDS_HOME": str(folder / "home"),
    }
    options = ["--port", str(port), "--trace-db", str(folder / "traces.sqlite"), "--max-upload-mb", "1"]
    url = f"http://127.0.0.1:{port}"
    with server_process(
        serve_command(*options), folder=folder, env=env, ready_url=f"{url}/healthz", name="serve", timeout_s=180
    ) as process:
        yield {"url": url, "tmpdir": tmpdir, "process": process}


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server['url']}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.mark.slow
def test_the_openai_client_transcribes_real_speech(server, client, shared_data, dev_references):
    from speech_hands.metrics.wer import word_errors

    with dev_flac(UTT).open("rb") as fh:
        plain = client.audio.transcriptions.create(model="speech-hands", file=fh)
    assert word_errors(dev_references[UTT], plain.text).wer < 0.3

    with dev_flac(UTT).open("rb") as fh:
        verbose = client.audio.transcriptions.create(model="speech-hands", file=fh, response_format="verbose_json")
    body = verbose.model_dump()
    assert body["text"] == plain.text and body["action"] in ("internal", "external", "rewrite")
    assert set(body["probs"]) == {"internal", "external", "rewrite"}
    assert sum(body["probs"].values()) == pytest.approx(1.0, abs=1e-6)
    import soundfile as sf

    assert verbose.duration == pytest.approx(sf.info(str(dev_flac(UTT))).duration, abs=0.01)
    assert verbose.segments[0].text.strip() and verbose.segments[0].end > verbose.segments[0].start
    assert body["segments"][0]["action"] == body["action"]
    roles = {c["role"]: c for c in body["candidates"]}
    assert set(roles) == {"internal", "external"} and all(c["hypotheses"] for c in body["candidates"])

    with dev_flac(UTT).open("rb") as fh:
        text = client.audio.transcriptions.create(model="speech-hands", file=fh, response_format="text")
    assert text.strip() == plain.text.strip()
    with dev_flac(UTT).open("rb") as fh:
        srt = client.audio.transcriptions.create(model="speech-hands", file=fh, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:") and plain.text.strip() in srt

    assert [m.id for m in client.models.list()] == ["speech-hands"]


@pytest.mark.slow
def test_process_with_and_without_the_callers_nbest_on_the_real_agent(server, shared_data, dev_references):
    audio = base64.b64encode(dev_flac(UTT).read_bytes()).decode()
    headers = {"Authorization": f"Bearer {KEY}"}
    plain = httpx.post(f"{server['url']}/v1/process", json={"audio_b64": audio}, headers=headers, timeout=120)
    assert plain.status_code == 200, plain.text
    answer = plain.json()
    assert answer["action_token"] in ("<internal>", "<external>", "<rewrite>")
    assert answer["routing_confidence"] == answer["probs"][answer["action_token"].strip("<>")]
    assert answer["internal_prediction"] and answer["final_answer"]
    given = httpx.post(
        f"{server['url']}/v1/process",
        json={"audio_b64": audio, "external_nbest": [dev_references[UTT], "i really was afraid"]},
        headers=headers,
        timeout=120,
    ).json()
    tools = {c["tool"]: c for c in given["candidates"]}
    assert tools["request-nbest"]["hypotheses"] == [dev_references[UTT], "i really was afraid"]
    assert len(tools) == 3 and sum(given["probs"].values()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_bad_uploads_and_a_missing_key_are_refused(server, client):
    import openai

    with pytest.raises(openai.BadRequestError, match="cannot read audio"):
        client.audio.transcriptions.create(model="speech-hands", file=("notes.wav", b"plain text, not audio"))
    with pytest.raises(openai.APIStatusError, match="over the limit of 1 MiB") as too_big:
        client.audio.transcriptions.create(model="speech-hands", file=("big.flac", os.urandom(1_200_000)))
    assert too_big.value.status_code == 413
    from openai import OpenAI

    stranger = OpenAI(base_url=f"{server['url']}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError), dev_flac(UTT).open("rb") as fh:
        stranger.audio.transcriptions.create(model="speech-hands", file=fh)
    assert httpx.post(f"{server['url']}/v1/audio/transcriptions", files={"file": ("a.flac", b"x")}).status_code == 401


@pytest.mark.slow
def test_no_audio_is_left_on_disk(server, client, shared_data):
    """Runs last in this module: after every request above, no audio is on disk where the server writes:
    its TMPDIR (a library leaves a 51-byte session-id file there, nothing else), its working folder
    (the log and the trace database) and its SPEECH_HANDS_HOME (where the LangGraph server graph keeps
    uploads; this service keeps none)."""
    with dev_flac(UTT).open("rb") as fh:
        client.audio.transcriptions.create(model="speech-hands", file=fh)
    head = dev_flac(UTT).read_bytes()[:4096]
    folder = Path(server["tmpdir"]).parent
    left = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.name for p in left if p.parent == folder} <= {"server.log", "traces.sqlite", "traces.sqlite-wal"} | {
        "traces.sqlite-shm"
    }
    for path in left:
        data = path.read_bytes()
        assert head not in data and not data.startswith((b"fLaC", b"RIFF", b"OggS", b"ID3")), path
    assert [p for p in Path(server["tmpdir"]).rglob("*") if p.stat().st_size > 1024] == []
    assert not (folder / "home" / "uploads").exists()


def test_a_port_in_use_exits_2_with_an_error_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(serve_command("--port", str(port)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"error: cannot listen on 127.0.0.1:{port}" in done.stderr


def test_a_missing_config_exits_2_with_an_error_line(tmp_path):
    done = subprocess.run(
        serve_command("--port", str(free_port()), "--config", str(tmp_path / "nope.toml")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "error: configuration file not found" in done.stderr


def test_a_bad_limit_exits_2_with_an_error_line():
    done = subprocess.run(
        serve_command("--port", str(free_port()), "--max-concurrent", "0"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "error: bad serve option" in done.stderr and "max_concurrent" in done.stderr
