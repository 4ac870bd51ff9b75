"""``benchmarks/soak.py`` itself, on tiny settings: the real script, the real ``speech-hands serve``
subprocess and the real clients, over an agent of test doubles (``--agent``) with the soak's faulty
tools around them, for a few seconds. Nothing here is timed: it checks that the script counts
requests and injected faults, accounts for each fault in its request's answer, writes its report,
and exits 1 when the server loses requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import REPO

FACTORY = '''
import sys
sys.path[:0] = [{tests!r}, {benchmarks!r}]
from doubles import CountingRewriter, FixedASR, ScriptedPolicy
from soak_agent import agent_settings, faulty_tools
from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni


def make(trace_db=None):
    omni = ComposedOmni(FixedASR("internal-asr", ["a cat"]), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    config = AgentConfig(trace_db=trace_db, detect_speech=False, **agent_settings())
    return SpeechHands(omni, faulty_tools(FixedASR("external-asr", ["a hat"])), config=config)


class Breaks(SpeechHands):
    """Every third run fails with an unhandled error (a 500: a lost request)."""

    runs = 0

    def invoke(self, *args, **kwargs):
        Breaks.runs += 1
        if Breaks.runs % 3 == 0:
            raise RuntimeError("the agent broke")
        return super().invoke(*args, **kwargs)


def broken(trace_db=None):
    agent = make(trace_db)
    return Breaks(agent.omni, agent.external, config=agent.config)
'''


def soak(tmp_path, function: str, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    factory = tmp_path / "soak_doubles.py"
    factory.write_text(FACTORY.format(tests=str(REPO / "tests"), benchmarks=str(REPO / "benchmarks")))
    out, figures = tmp_path / "RESULTS.md", tmp_path / "soak.json"
    command = [
        sys.executable, str(REPO / "benchmarks" / "soak.py"), "--agent", f"{factory}:{function}", "--clients", "2",
        "--minutes", "0.12", "--limit", "3", "--tool-timeout-s", "0.3", "--hang-s", "0.6", "--probe-s", "1",
        "--raise-rate", "0.3", "--hang-rate", "0.2", "--garbage-rate", "0.3", "--bad-rate", "0.3",
        "--max-rss-growth-mb", "10000", "--quiet", "--out", str(out), "--json", str(figures), *options,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert figures.exists(), done.stdout + done.stderr
    return done, json.loads(figures.read_text())


def test_the_soak_accounts_for_every_request_and_fault(tmp_path):
    done, figures = soak(tmp_path, "make")
    assert done.returncode == 0, done.stdout + done.stderr
    assert figures["requests"] > 5 and figures["lost"] == 0
    assert set(figures["by_kind"]) & {"corrupt", "oversized_body", "too_long"}  # bad uploads were sent
    assert {"400", "413"} & set(figures["by_status"]) and "200" in figures["by_status"]
    injected = figures["faults_injected"]
    assert sum(injected.values()) > 0 and figures["faults_traced"] == injected and figures["faults_lost"] == 0
    assert figures["rss"]["samples"] > 0 and figures["rss"]["peak_mb"] > 0
    assert figures["latency_s"]["speech_p50"] is not None
    section = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- soak:start -->" in section and "| lost requests | 0 |" in section


def test_the_soak_fails_when_the_server_loses_requests(tmp_path):
    done, figures = soak(tmp_path, "broken")
    assert done.returncode == 1, done.stdout + done.stderr
    assert figures["lost"] > 0 and any("status 500" in why for why in figures["lost_examples"])
    assert "soak FAILED" in done.stderr
