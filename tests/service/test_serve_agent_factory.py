"""``speech-hands serve --agent MODULE:FUNCTION``: the real command in a subprocess serving an agent the
user's own code makes (here: doubles for the models, a failing external tool that failover takes
out), and the exit status 2 with one ``error:`` line for every bad factory."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import httpx
import pytest
from helpers import REPO, dev_flac
from loopback import free_port, server_process

UTT = "1688-142285-0007"


def serve_command(*options: str) -> list[str]:
    return [sys.executable, "-m", "speech_hands.cli", "serve", *options]


FACTORY = """
import sys
sys.path.insert(0, {tests!r})
from doubles import CountingRewriter, FaultyASR, FixedASR, ScriptedPolicy
from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni


def make(trace_db=None):
    omni = ComposedOmni(FixedASR("own-internal", ["own words"]), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    config = AgentConfig(trace_db=trace_db, detect_speech=False, failover={{"after_failures": 1}})
    return SpeechHands(omni, [FaultyASR("own-flaky", ["raise"])], config=config)


def not_an_agent():
    return 42
"""


def test_serve_runs_the_agent_a_factory_makes(tmp_path):
    factory = tmp_path / "own_agent.py"
    factory.write_text(FACTORY.format(tests=str(REPO / "tests")))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = serve_command("--agent", f"{factory}:make", "--port", str(port), "--trace-db", str(tmp_path / "t.sqlite"))
    url = f"http://127.0.0.1:{port}"
    with server_process(command, folder=tmp_path, env=env, ready_url=f"{url}/healthz", name="serve", timeout_s=120):
        assert httpx.get(f"{url}/healthz").json()["tools"] == ["own-internal", "own-flaky"]
        audio = base64.b64encode(dev_flac(UTT).read_bytes()).decode()
        answer = httpx.post(f"{url}/v1/process", json={"audio_b64": audio}, timeout=60).json()
        assert answer["final_answer"] == "own words" and any("marked unavailable" in n for n in answer["notes"])
        assert httpx.get(f"{url}/healthz").json()["unavailable"] == ["own-flaky"]
    assert (tmp_path / "t.sqlite").is_file()  # --trace-db reached the factory


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere.py:make", "no such file"),
        ("no_such_module_xyz:make", "cannot import"),
        ("{factory}:missing", "has no function 'missing'"),
        ("{factory}:not_an_agent", "returned int, not a SpeechHands"),
        ("{factory}", "give MODULE:FUNCTION"),
    ],
)
def test_a_bad_agent_factory_exits_2_with_an_error_line(tmp_path, spec, message):
    factory = tmp_path / "own_agent.py"
    factory.write_text(FACTORY.format(tests=str(REPO / "tests")))
    options = ("--agent", spec.format(factory=factory), "--port", str(free_port()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(serve_command(*options), capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    said = "".join(done.stderr.split())  # the error line is wrapped to the terminal's width
    assert done.returncode == 2 and "error:--agent" in said and "".join(message.split()) in said, done.stderr
