"""Scale-out: two ``speech-hands serve`` worker processes on one PostgreSQL database (a real server the
tests start), driven with the real ``openai`` client. Requests spread over both workers give the same
answers, actions and probabilities as one worker, and a run written through one worker is read back
(``GET /v1/threads/{id}/trace``) through the other.

The workers are light, as in a deployment (docs/deploy.md): their models sit behind an OpenAI-compatible
transcription server, here a loopback stub whose answers depend on the audio (the models are not under
test; the workers, the routing graph with the confidence baseline, and the shared checkpointer are)."""

from __future__ import annotations

import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from helpers import REPO
from loopback import free_port, parse_multipart, serve, server_process

#: clip duration (s) -> model -> (text, avg_logprob): the confidence baseline then picks internal (the two
#: agree), external (more confident) and rewrite (both unsure) for the three clips
ANSWERS = {
    1.0: {"internal": ("the cat sat on the mat", -0.05), "external": ("the cat sat on the mat", -0.3)},
    1.5: {"internal": ("a dog ran in the park", -1.2), "external": ("the dog ran in the park", -0.02)},
    2.0: {"internal": ("the big cat sat down", -1.5), "external": ("the bag cat sat town", -1.4)},
}


def clip(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16_000)) / 16_000
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000, format="WAV")
    return buffer.getvalue()


def answer(handler, body: bytes):
    fields = parse_multipart(handler.headers["Content-Type"], body)
    duration = round(sf.info(io.BytesIO(fields["file"])).duration * 2) / 2
    text, logprob = ANSWERS[duration][fields["model"].decode()]
    return 200, {"text": text, "segments": [{"text": text, "avg_logprob": logprob}]}


@pytest.fixture(scope="module")
def workers(tmp_path_factory, postgres):
    """Two workers on one fresh database, behind nothing: the test is the load balancer."""
    url = postgres.create_database("serve_workers")
    folder = tmp_path_factory.mktemp("workers")
    with serve(answer) as models:
        config = folder / "agent.toml"
        config.write_text(
            "[agent]\ndetect_speech = false\nn_best = 1\n"
            '[omni]\nkind = "embedded"\nname = "stub-omni"\n'
            f'[omni.predictor]\nkind = "openai-transcription"\nmodel = "internal"\nbase_url = "{models}"\n'
            'name = "internal-asr"\nmax_retries = 0\n'
            f'[[external]]\nkind = "openai-transcription"\nmodel = "external"\nbase_url = "{models}"\n'
            'name = "external-asr"\nmax_retries = 0\n'
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        urls = []
        with ExitStack() as stack:
            for name in ("a", "b"):
                (folder / name).mkdir()
                port = free_port()
                command = [sys.executable, "-m", "speech_hands.cli", "serve", "--port", str(port)]
                command += ["--config", str(config), "--checkpointer", url, "--max-concurrent", "2"]
                ready = f"http://127.0.0.1:{port}/healthz"
                stack.enter_context(
                    server_process(
                        command, folder=folder / name, env=env, ready_url=ready, name=f"worker {name}", timeout_s=180
                    )
                )
                urls.append(f"http://127.0.0.1:{port}")
            yield {"urls": urls, "folder": folder, "database": url}


def transcribe(base: str, seconds: float) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)
    reply = client.audio.transcriptions.create(
        model="speech-hands", file=(f"clip-{seconds}.wav", clip(seconds)), response_format="verbose_json"
    )
    return reply.model_dump()


def decision(body: dict) -> tuple:
    return body["text"], body["action"], body["probs"], [(c["tool"], c["hypotheses"]) for c in body["candidates"]]


def test_requests_spread_over_two_workers_give_what_one_worker_gives(workers):
    one, other = workers["urls"]
    alone = {seconds: decision(transcribe(one, seconds)) for seconds in ANSWERS}
    assert {seconds: alone[seconds][1] for seconds in ANSWERS} == {1.0: "internal", 1.5: "external", 2.0: "rewrite"}
    jobs = [(workers["urls"][i % 2], seconds) for i, seconds in enumerate(list(ANSWERS) * 4)]  # 12, both workers
    with ThreadPoolExecutor(max_workers=4) as pool:
        spread = list(pool.map(lambda job: (job, transcribe(*job)), jobs))
    for (base, seconds), body in spread:
        assert decision(body) == alone[seconds], (base, seconds)
    assert {base for (base, _), _ in spread} == {one, other}
    workers["threads"] = [(base, body["thread_id"], body["text"]) for (base, _), body in spread]


def test_a_run_written_through_one_worker_is_traced_through_the_other(workers):
    if "threads" not in workers:
        pytest.fail("runs after test_requests_spread_over_two_workers_give_what_one_worker_gives")
    one, other = workers["urls"]
    for written_by, thread, text in workers["threads"]:
        reader = other if written_by == one else one
        reply = httpx.get(f"{reader}/v1/threads/{thread}/trace", timeout=30)
        assert reply.status_code == 200, reply.text
        trace = reply.json()
        assert trace["thread_id"] == thread and trace["result"]["answer"] == text
        assert [n for s in trace["steps"] for n in s["nodes"]][-1] == "finish"
    missing = httpx.get(f"{one}/v1/threads/no-such-thread/trace", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "thread_not_found"


def test_both_workers_logs_never_show_the_database_password(workers):
    from postgres import PASSWORD

    logs = [Path(workers["folder"], name, "server.log").read_text() for name in ("a", "b")]
    assert all("speech-hands serve: http://127.0.0.1:" in log for log in logs)
    assert all(PASSWORD not in log for log in logs)
