"""Faults of the parts the graph calls, each traced as a fallback instead of crashing or being
silently taken: a reflection model returning nonsense (a dict, an invalid action, NaN probabilities,
a negative or too-large external rank), and a tool that hangs (isolated, never exhausting the agent,
never keeping the process alive)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from doubles import CountingRewriter, FixedASR, ScriptedPolicy
from helpers import dev_flac, write_wav

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni
from speech_hands.types import Reflection

INTERNAL_TEXT = ["the cat sat on the mat", "the cat sat on a mat"]
EXTERNAL_TEXT = ["the cat sat on the hat", "a cat sat on the hat", "the cat sat in the hat"]
PROBS = {Action.INTERNAL: 0.2, Action.EXTERNAL: 0.7, Action.REWRITE: 0.1}


@pytest.fixture()
def speech_like(tmp_path: Path) -> Path:
    t = np.arange(16_000) / 16_000
    return write_wav(tmp_path / "tone.wav", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


class ReturnsThis:
    """A reflection model whose output is whatever the test hands it."""

    name = "returns-this"

    def __init__(self, make) -> None:
        self.make = make

    def reflect(self, inp, sample: bool = False):
        return self.make()


def run(policy, audio: Path):
    omni = ComposedOmni(FixedASR("internal-asr", INTERNAL_TEXT), policy, CountingRewriter())
    config = AgentConfig(trace_db=":memory:")
    with SpeechHands(omni, [FixedASR("external-asr", EXTERNAL_TEXT)], config=config) as agent:
        return agent.invoke(audio)


NONSENSE = {
    "a dict": lambda: {"action": "external"},
    "an invalid action": lambda: Reflection.model_construct(action="maybe", probs=PROBS, raw_token="?", policy="x"),
    "NaN probabilities": lambda: Reflection.model_construct(
        action=Action.EXTERNAL, probs={a: float("nan") for a in Action}, raw_token="<external>", policy="x"
    ),
    "a negative rank": lambda: Reflection.model_construct(
        action=Action.EXTERNAL, probs=PROBS, raw_token="<external>", policy="x", external_rank=-3
    ),
    "not a reflection at all": lambda: "external",
}


@pytest.mark.parametrize("what", sorted(NONSENSE))
def test_a_nonsense_reflection_is_a_traced_fallback(what, speech_like):
    result = run(ReturnsThis(NONSENSE[what]), speech_like)
    assert result.action is Action.INTERNAL and result.answer == INTERNAL_TEXT[0]
    assert result.reflection.policy == "fallback:reflection-failed"
    assert any("reflection failed" in note for note in result.notes)


def test_a_negative_external_rank_is_refused_where_the_reflection_is_made():
    with pytest.raises(ValueError, match="external_rank"):
        Reflection(action=Action.EXTERNAL, probs=PROBS, raw_token="<external>", policy="x", external_rank=-3)


def test_a_rank_beyond_the_list_is_noted(speech_like):
    too_far = Reflection(
        action=Action.EXTERNAL,
        probs=PROBS,
        raw_token="<external>",
        policy="x",
        external_tool="external-asr",
        external_rank=7,
    )
    result = run(ReturnsThis(lambda: too_far), speech_like)
    assert result.action is Action.EXTERNAL and result.answer == EXTERNAL_TEXT[-1]
    assert any("rank 7" in note for note in result.notes)


class HangingASR:
    """An ASR tool whose calls never return until the test releases them."""

    name = "hanging-asr"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def transcribe(self, audio, n_best: int = 5):
        self.calls += 1
        self.release.wait(60)
        return FixedASR(self.name, EXTERNAL_TEXT).transcribe(audio, n_best)


def test_a_hanging_tool_cannot_exhaust_the_agent(speech_like):
    hanging = HangingASR()
    omni = ComposedOmni(FixedASR("internal-asr", INTERNAL_TEXT), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    # failover off: this is the isolation of a hung call alone (tests/graph/test_failover.py has both)
    config = AgentConfig(trace_db=":memory:", tool_timeout_s=0.2, failover={"after_failures": None})
    with SpeechHands(omni, [hanging], config=config) as agent:
        results = [agent.invoke(speech_like) for _ in range(12)]  # more runs than any thread pool had workers
        assert all(r.answer == INTERNAL_TEXT[0] for r in results)  # the healthy internal model always answers
        assert hanging.calls == 1  # the hung tool is isolated until its call returns, not called again
        errors = [next(o for o in r.candidates if o.tool == hanging.name).error for r in results]
        assert errors[0].type == "TimeoutError" and {e.type for e in errors[1:]} == {"ToolBusy"}
        assert any("is busy" in note for note in results[-1].notes)
        hanging.release.set()  # the call returns: the tool is called again
        deadline = time.monotonic() + 5
        while agent.routing.calls.stuck() and time.monotonic() < deadline:
            time.sleep(0.01)
        hanging.release.clear()
        later = agent.invoke(speech_like)
        assert (
            hanging.calls == 2
            and next(o for o in later.candidates if o.tool == hanging.name).error.type == "TimeoutError"
        )
        hanging.release.set()


def test_the_process_exits_while_a_tool_hangs(tmp_path):
    tests_dir = os.pathsep.join(str(p) for p in Path(__file__).resolve().parents[1:3])
    script = tmp_path / "hang.py"
    script.write_text(
        "import threading, numpy as np\n"
        "from speech_hands import Action, AgentConfig, SpeechHands\n"
        "from speech_hands.audio import audio_from_array\n"
        "from speech_hands.backends.composed import ComposedOmni\n"
        "from doubles import CountingRewriter, FixedASR, ScriptedPolicy\n"
        "class Hang:\n"
        "    name = 'hang'\n"
        "    def transcribe(self, audio, n_best=5):\n"
        "        threading.Event().wait()\n"
        "omni = ComposedOmni(FixedASR('i', ['hello']), ScriptedPolicy([Action.INTERNAL]), CountingRewriter())\n"
        "agent = SpeechHands(omni, [Hang()], config=AgentConfig(trace_db=':memory:', tool_timeout_s=0.2))\n"
        "t = np.arange(16000) / 16000\n"
        "print(agent.invoke(audio_from_array((0.2 * np.sin(2 * np.pi * 220 * t)).astype('float32'), 16000)).answer)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": tests_dir, "PATH": "", "SPEECH_HANDS_EXIT_GRACE_S": "0.5"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello"
    # it waited (briefly) for the hung call, said so, and then exited anyway
    assert "exiting with 1 timed-out tool call(s) still running" in done.stderr


@pytest.mark.parametrize(
    "garbage", ["word " * 1000, ")" * 300, "\u2581\u2581 ... !!! ??? ---"], ids=["too-long", "punctuation", "symbols"]
)
def test_an_implausible_candidate_is_set_aside_with_a_note(garbage, speech_like):
    class Garbled(FixedASR):
        def transcribe(self, audio, n_best: int = 5):
            good = super().transcribe(audio, n_best)
            return [good[0].model_copy(update={"text": garbage}), *good[1:]]

    omni = ComposedOmni(FixedASR("internal-asr", INTERNAL_TEXT), ScriptedPolicy([Action.EXTERNAL]), CountingRewriter())
    with SpeechHands(omni, [Garbled("garbled-asr", EXTERNAL_TEXT)], config=AgentConfig(trace_db=":memory:")) as agent:
        result = agent.invoke(speech_like)
    garbled = next(o for o in result.candidates if o.tool == "garbled-asr")
    assert [h.text for h in garbled.rejected] == [garbage]
    assert [h.text for h in garbled.hypotheses] == EXTERNAL_TEXT[1:] and garbled.hypotheses[0].rank == 0
    assert result.answer == EXTERNAL_TEXT[1]  # <external> takes the tool's best plausible candidate
    assert any("implausible candidate" in note for note in result.notes)


LONG_DECODE = (
    "import sys, numpy as np, soundfile as sf\n"
    "from speech_hands.audio import audio_from_array\n"
    "from speech_hands.backends.faster_whisper import FasterWhisperASR\n"
    "from speech_hands.graphs.calls import ToolCalls, ToolTimeout\n"
    "samples = np.concatenate([sf.read(p, dtype='float32')[0] for p in sys.argv[2:]])[: 29 * 16000]\n"
    "models = [FasterWhisperASR(model=m, cpu_threads=1) for m in ('bundled:base', 'bundled:tiny.en')]\n"
    "calls = ToolCalls()\n"
    "for i, model in enumerate(models):\n"
    "    model.load()\n"
    "    try:\n"
    "        calls.call(f'asr{i}', model.transcribe, audio_from_array(samples, 16000), 5, timeout_s=float(sys.argv[1]))\n"
    "    except ToolTimeout:\n"
    "        print('timed out', flush=True)\n"
    "sys.exit(3)\n"
)


def _run_python(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter importing this checkout (and the tests' helpers)."""
    here = Path(__file__).resolve()
    path = os.pathsep.join([str(here.parents[2]), str(here.parents[1])])
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path, **env},
    )


def _dev_files(n: int = 3) -> list[str]:
    return [str(dev_flac(uid)) for uid in ("1688-142285-0000", "1688-142285-0001", "1688-142285-0002")[:n]]


@pytest.mark.parametrize("timeout_s", [0.05, 1.0])
def test_a_native_call_that_timed_out_does_not_crash_the_exit(tmp_path, timeout_s):
    """Two CTranslate2 decodes still running when the process ended used to crash it (status 139, or
    134: "terminate called without an active exception"), losing its exit code: the exit now waits
    for them and keeps the code."""
    script = tmp_path / "decode.py"
    script.write_text(LONG_DECODE)
    done = _run_python(script, str(timeout_s), *_dev_files())
    assert done.stdout.split() == ["timed", "out", "timed", "out"]
    assert done.returncode == 3, done.stderr[-2000:]
    assert "waiting up to 10 s for 2 tool call(s) that timed out" in done.stderr


def test_the_cli_keeps_its_exit_code_when_a_timed_out_call_outlives_the_wait(tmp_path):
    """Every tool times out on a 29 s turn: it gets no answer, so the code is 1; with no wait at
    all the CLI ends without finalising the interpreter, and still exits 1."""
    config = tmp_path / "agent.toml"
    config.write_text(
        "[agent]\ntool_timeout_s = 0.05\ntrace_db = ':memory:'\n[omni]\nkind = 'embedded'\nreflector = 'auto'\n"
        "[omni.predictor]\nkind = 'faster-whisper'\nmodel = 'bundled:base'\n"
        "[[external]]\nkind = 'faster-whisper'\nmodel = 'bundled:tiny.en'\n"
    )
    import soundfile as sf

    samples = np.concatenate([sf.read(p, dtype="float32")[0] for p in _dev_files()])[: 29 * 16_000]
    audio = write_wav(tmp_path / "long.wav", samples)
    cli = tmp_path / "cli.py"
    cli.write_text("from speech_hands.cli import main\nmain()\n")
    done = _run_python(cli, "chat", str(audio), "--config", str(config), SPEECH_HANDS_EXIT_GRACE_S="0")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "without finalising the interpreter" in done.stderr
