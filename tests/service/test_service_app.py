"""The HTTP service in process: the FastAPI app of ``create_app`` under a real uvicorn server on
loopback, driven with httpx. The models are test doubles (the service, not the models, is under
test); the routing graph, the checkpointer, the limits and the audio decoding are the real ones."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import soundfile as sf
from doubles import CountingRewriter, FixedASR, ScriptedPolicy
from loopback import free_port

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni
from speech_hands.service import ServiceSettings, create_app


def wav_bytes(seconds: float = 1.0, sample_rate: int = 16_000) -> bytes:
    """A real WAV file's bytes (a tone, so it is not silent)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sample_rate, format="WAV")
    return buffer.getvalue()


class BlockingASR(FixedASR):
    """An external tool that waits for ``release`` (sets ``entered`` when a run reaches it)."""

    def __init__(self, name: str, texts: list[str]) -> None:
        super().__init__(name, texts)
        self.entered = threading.Event()
        self.release = threading.Event()

    def transcribe(self, audio, n_best: int = 5):
        self.entered.set()
        assert self.release.wait(30), "the test never released the tool"
        return super().transcribe(audio, n_best)


def make_agent(external=(), actions=(Action.EXTERNAL,)) -> SpeechHands:
    omni = ComposedOmni(FixedASR("internal-asr", ["a b c"]), ScriptedPolicy(list(actions)), CountingRewriter())
    return SpeechHands(omni, list(external), config=AgentConfig(trace_db=":memory:", detect_speech=False))


@contextmanager
def running(agent: SpeechHands, settings: ServiceSettings | None = None) -> Iterator[str]:
    """A real uvicorn server on a free loopback port serving ``create_app(agent, settings)``."""
    import uvicorn

    config = uvicorn.Config(create_app(agent, settings), host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        agent.close()


def transcribe(url: str, data: bytes, **fields) -> httpx.Response:
    files = {"file": ("clip.wav", data, "audio/wav")}
    return httpx.post(
        f"{url}/v1/audio/transcriptions", files=files, data={"model": "speech-hands", **fields}, timeout=60
    )


def test_a_full_server_answers_503_with_retry_after_and_admits_again_when_free():
    tool = BlockingASR("external-asr", ["a b d"])
    with running(make_agent([tool]), ServiceSettings(max_concurrent=1, max_queue=0, retry_after_s=3)) as url:
        first: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: first.update(r=transcribe(url, wav_bytes())))
        worker.start()
        try:
            assert tool.entered.wait(30), "the first request never reached the tool"
            started = time.perf_counter()
            busy = transcribe(url, wav_bytes())
            assert time.perf_counter() - started < 5  # refused at once, not queued behind the first
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "3"
            assert (
                busy.json()["error"]["code"] == "server_busy" and httpx.get(f"{url}/healthz").json()["in_flight"] == 1
            )
        finally:
            tool.release.set()
            worker.join(60)
        assert first["r"].status_code == 200 and first["r"].json() == {"text": "a b d"}
        again = transcribe(url, wav_bytes())
        assert again.status_code == 200 and again.json() == {"text": "a b d"}


def test_a_queue_place_waits_for_the_running_request_instead_of_503():
    tool = BlockingASR("external-asr", ["a b d"])
    with running(make_agent([tool]), ServiceSettings(max_concurrent=1, max_queue=1)) as url:
        answers: list[httpx.Response] = []
        workers = [threading.Thread(target=lambda: answers.append(transcribe(url, wav_bytes()))) for _ in range(2)]
        workers[0].start()
        assert tool.entered.wait(30)
        workers[1].start()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/healthz").json()["in_flight"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert transcribe(url, wav_bytes()).status_code == 503  # one running + one waiting: full
        tool.release.set()
        for w in workers:
            w.join(60)
        assert [r.status_code for r in answers] == [200, 200]


@pytest.fixture()
def url() -> Iterator[str]:
    with running(make_agent([FixedASR("external-asr", ["a b d", "a b e"])])) as found:
        yield found


def test_response_formats(url):
    assert transcribe(url, wav_bytes()).json() == {"text": "a b d"}
    text = transcribe(url, wav_bytes(), response_format="text")
    assert text.text == "a b d\n" and text.headers["content-type"].startswith("text/plain")
    assert transcribe(url, wav_bytes(), response_format="srt").text == "1\n00:00:00,000 --> 00:00:01,000\na b d\n"
    assert transcribe(url, wav_bytes(), response_format="vtt").text.startswith(
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000"
    )
    verbose = transcribe(url, wav_bytes(), response_format="verbose_json", language="en").json()
    assert verbose["task"] == "transcribe" and verbose["language"] == "en" and verbose["duration"] == 1.0
    assert verbose["text"] == "a b d" and verbose["action"] == "external"
    assert verbose["probs"] == {"internal": 0.1, "external": 0.8, "rewrite": 0.1}
    (segment,) = verbose["segments"]
    assert segment["id"] == 0 and segment["text"] == "a b d" and segment["action"] == "external"
    assert {c["tool"]: c["hypotheses"] for c in verbose["candidates"]} == {
        "internal-asr": ["a b c"],
        "external-asr": ["a b d", "a b e"],
    }
    assert verbose["thread_id"] and isinstance(verbose["notes"], list)


def test_process_json_and_multipart(url):
    audio = base64.b64encode(wav_bytes()).decode()
    answer = httpx.post(f"{url}/v1/process", json={"audio_b64": audio, "task": "transcribe"}, timeout=60).json()
    assert answer["action_token"] == "<external>" and answer["final_answer"] == "a b d"
    assert answer["internal_prediction"] == "a b c" and answer["routing_confidence"] == 0.8
    assert answer["probs"] == {"internal": 0.1, "external": 0.8, "rewrite": 0.1} and answer["thread_id"]
    form = httpx.post(
        f"{url}/v1/process", files={"file": ("c.wav", wav_bytes())}, data={"task": "transcribe"}, timeout=60
    ).json()
    assert form["final_answer"] == "a b d" and form["thread_id"] != answer["thread_id"]


def test_process_routes_over_the_callers_nbest():
    """With no external tool of its own, the agent can only answer externally from the caller's list."""
    with running(make_agent([])) as url:
        audio = base64.b64encode(wav_bytes()).decode()
        plain = httpx.post(f"{url}/v1/process", json={"audio_b64": audio}, timeout=60).json()
        assert [c["tool"] for c in plain["candidates"]] == ["internal-asr"]
        given = httpx.post(
            f"{url}/v1/process", json={"audio_b64": audio, "external_nbest": ["x y z", "x y"]}, timeout=60
        ).json()
        assert given["action_token"] == "<external>" and given["final_answer"] == "x y z"
        assert {c["tool"]: c["hypotheses"] for c in given["candidates"]}["request-nbest"] == ["x y z", "x y"]
        one = httpx.post(
            f"{url}/v1/process",
            files={"file": ("c.wav", wav_bytes())},
            data={"external_prediction": "p q"},
            timeout=60,
        ).json()
        assert one["final_answer"] == "p q"
        listed = httpx.post(
            f"{url}/v1/process",
            files={"file": ("c.wav", wav_bytes())},
            data={"external_nbest": '["m n", "m"]'},
            timeout=60,
        ).json()
        assert listed["final_answer"] == "m n"
        # the list lived for its request only: the next plain request has no request-nbest candidate
        after = httpx.post(f"{url}/v1/process", json={"audio_b64": audio}, timeout=60).json()
        assert [c["tool"] for c in after["candidates"]] == ["internal-asr"]


def test_health_and_models(url):
    health = httpx.get(f"{url}/healthz").json()
    assert health["status"] == "ok" and health["models_loaded"] is True and health["model"] == "speech-hands"
    assert health["tools"] == ["internal-asr", "external-asr"]
    assert httpx.get(f"{url}/v1/models").json() == {
        "object": "list",
        "data": [{"id": "speech-hands", "object": "model", "created": 0, "owned_by": "speech-hands"}],
    }


@pytest.mark.parametrize(
    ("send", "status", "code", "message"),
    [
        (lambda u: transcribe(u, b"this is not audio at all"), 400, "invalid_audio", "cannot read audio"),
        (lambda u: transcribe(u, b""), 400, "invalid_audio", "is empty"),
        (
            lambda u: httpx.post(f"{u}/v1/audio/transcriptions", data={"model": "m"}),
            400,
            "missing",
            "the file field is missing",
        ),
        (lambda u: transcribe(u, wav_bytes(), response_format="xml"), 400, None, "response_format 'xml'"),
        (lambda u: httpx.post(f"{u}/v1/process", content=b"x", headers={"content-type": "text/plain"}), 415, None, ""),
        (lambda u: httpx.post(f"{u}/v1/process", json={"audio_b64": "not base64!"}), 400, None, "not valid base64"),
        (lambda u: httpx.post(f"{u}/v1/process", json={"task": "qa"}), 400, None, "not a valid /v1/process"),
        (
            lambda u: httpx.post(f"{u}/v1/process", json={"audio_b64": "AAAA", "task": "qa"}),
            400,
            None,
            "needs a question",
        ),
        (lambda u: httpx.post(f"{u}/v1/process", files={"other": ("a", b"b")}), 400, None, "file field is missing"),
    ],
)
def test_bad_requests_get_a_clear_4xx_in_openais_error_shape(url, send, status, code, message):
    response = send(url)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and message in error["message"]
    if code is not None:
        assert error["code"] == code


def test_size_and_duration_limits():
    settings = ServiceSettings(max_upload_mb=0.5, max_audio_s=2.0)
    with running(make_agent([FixedASR("external-asr", ["a b d"])]), settings) as url:
        too_long = transcribe(url, wav_bytes(seconds=3.0))
        assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "audio_too_long"
        assert "over the limit of 2 s" in too_long.json()["error"]["message"]
        too_big = transcribe(url, wav_bytes(seconds=20.0))  # 1.3 MB of WAV
        assert too_big.status_code == 413 and "over the limit of 0.5 MiB" in too_big.json()["error"]["message"]

        def chunks():  # no Content-Length: the limit counts what arrives
            for _ in range(8):
                yield b"x" * 100_000

        streamed = httpx.post(f"{url}/v1/process", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert transcribe(url, wav_bytes(seconds=1.0)).status_code == 200


def test_bearer_token_auth():
    with running(make_agent([FixedASR("external-asr", ["a b d"])]), ServiceSettings(api_key="s3cret")) as url:
        missing = transcribe(url, wav_bytes())
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200  # health checks need no key


def test_the_app_closes_an_agent_it_owns_at_shutdown():
    import uvicorn

    agent = make_agent([FixedASR("external-asr", ["a b d"])])
    config = uvicorn.Config(create_app(agent, owns_agent=True), host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert transcribe(f"http://127.0.0.1:{config.port}", wav_bytes()).status_code == 200
    assert not agent._closed
    server.should_exit = True
    thread.join(timeout=30)
    assert agent._closed


def test_healthz_reports_a_tool_taken_out_by_failover():
    from doubles import FaultyASR

    broken = FaultyASR("flaky-asr", ["raise"])
    omni = ComposedOmni(FixedASR("internal-asr", ["a b c"]), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    config = AgentConfig(trace_db=":memory:", detect_speech=False, failover={"after_failures": 1})
    with running(SpeechHands(omni, [broken], config=config)) as url:
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        first = httpx.post(f"{url}/v1/process", json={"audio_b64": base64.b64encode(wav_bytes()).decode()}, timeout=60)
        assert first.status_code == 200 and first.json()["final_answer"] == "a b c"
        assert any("marked unavailable" in n for n in first.json()["notes"])
        health = httpx.get(f"{url}/healthz").json()
        assert health["status"] == "degraded" and health["unavailable"] == ["flaky-asr"]
        (flaky,) = [t for t in health["tool_status"] if t["name"] == "flaky-asr"]
        assert flaky["available"] is False and "RuntimeError" in flaky["last_error"] and flaky["next_probe_in_s"] > 0
        # the caller-N-best variant shares the agent's availability: the tool stays out there too
        listed = httpx.post(
            f"{url}/v1/process", files={"file": ("c.wav", wav_bytes())}, data={"external_nbest": "x y"}, timeout=60
        ).json()
        assert next(c for c in listed["candidates"] if c["tool"] == "flaky-asr")["error"].startswith("ToolUnavailable")
        assert broken.calls == 1


class PromptRecordingASR(FixedASR):
    """An external recogniser that takes a prompt and records the ones it is given."""

    def __init__(self, name: str, texts: list[str]) -> None:
        super().__init__(name, texts)
        self.prompts: list[str | None] = []

    def transcribe(self, audio, n_best: int = 5, prompt: str | None = None):
        self.prompts.append(prompt)
        return super().transcribe(audio, n_best)


def test_openais_prompt_field_reaches_the_recognisers_that_take_one():
    tool = PromptRecordingASR("tool", ["x y z"])
    with running(make_agent([tool])) as url:
        assert transcribe(url, wav_bytes(), prompt="Mister Hale said").status_code == 200
        assert transcribe(url, wav_bytes()).status_code == 200
    assert tool.prompts == ["Mister Hale said", None]


def test_a_bad_upload_is_answered_at_once_while_every_run_slot_is_busy():
    tool = BlockingASR("external-asr", ["a b d"])
    settings = ServiceSettings(max_concurrent=1, max_queue=0, max_audio_s=5)
    with running(make_agent([tool]), settings) as url:
        first: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: first.update(r=transcribe(url, wav_bytes())))
        worker.start()
        try:
            assert tool.entered.wait(30), "the first request never reached the tool"
            corrupt = transcribe(url, b"RIFF not really audio")  # decoded before the gate: no 503, no wait
            too_long = transcribe(url, wav_bytes(seconds=6.0))
            assert (corrupt.status_code, corrupt.json()["error"]["code"]) == (400, "invalid_audio")
            assert (too_long.status_code, too_long.json()["error"]["code"]) == (413, "audio_too_long")
            assert not tool.release.is_set() and httpx.get(f"{url}/healthz").json()["in_flight"] == 1
        finally:
            tool.release.set()
            worker.join(60)
        assert first["r"].status_code == 200
