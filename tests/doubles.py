"""Test doubles for the parts NOT under test (forcing a graph edge, a tool that sleeps/fails).

They are never used as a stand-in for a component a user would run: the graph tests drive the real
graph, the real checkpointer and the real rewrite/vote code with them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from speech_hands.audio import AudioInput
from speech_hands.reflection.base import ReflectionInput
from speech_hands.types import Action, Hypothesis, Reflection


class ScriptedPolicy:
    """Emits the given actions round by round (round r -> actions[min(r, len-1)])."""

    name = "scripted"

    def __init__(self, actions: Sequence[Action], probs: dict[Action, float] | None = None) -> None:
        self.actions = list(actions)
        self.probs = probs
        self.calls: list[ReflectionInput] = []
        self._lock = threading.Lock()

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        with self._lock:
            self.calls.append(inp)
        action = self.actions[min(inp.round, len(self.actions) - 1)]
        probs = self.probs or {a: (0.8 if a is action else 0.1) for a in Action}
        external = next((o for o in inp.externals if o.ok), None)
        return Reflection(
            action=action,
            probs=probs,
            raw_token=action.token,
            policy=self.name,
            external_tool=external.tool if external else None,
        )


class SampledPolicy:
    """Returns a pre-set (action, answer) per sample index, for majority-vote tests."""

    name = "sampled"

    def __init__(self, draws: Sequence[tuple[Action, str | None, float]]) -> None:
        self.draws = list(draws)

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        action, answer, p = self.draws[inp.sample_index]
        rest = (1.0 - p) / 2
        probs = {a: (p if a is action else rest) for a in Action}
        return Reflection(action=action, probs=probs, raw_token=action.token, policy=self.name, answer=answer)


class FixedASR:
    """Returns fixed hypotheses after an optional delay; records when it ran."""

    def __init__(self, name: str, texts: Sequence[str], *, delay_s: float = 0.0, score: float = -0.2) -> None:
        self.name = name
        self.texts = list(texts)
        self.delay_s = delay_s
        self.score = score
        self.intervals: list[tuple[float, float]] = []

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        start = time.perf_counter()
        time.sleep(self.delay_s)
        self.intervals.append((start, time.perf_counter()))
        return [
            Hypothesis(text=t, score=self.score - 0.1 * i, source=self.name, rank=i)
            for i, t in enumerate(self.texts[:n_best])
        ]


class FixedCaption(FixedASR):
    """A caption / audio-QA backend returning fixed answers (an omni model's own answer in QA graphs)."""

    def caption(self, audio: AudioInput, question: str | None = None) -> list[Hypothesis]:
        return self.transcribe(audio)


class FailingASR:
    def __init__(self, name: str = "broken-asr", exc: Exception | None = None) -> None:
        self.name = name
        self.exc = exc or RuntimeError("CUDA out of memory (simulated)")

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        raise self.exc


class CountingRewriter:
    """A rewrite strategy that tags its output with the round, to check the loop bound."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        self.calls += 1
        return Hypothesis(text=f"rewrite {self.calls}", score=-0.05, source="rewrite:counting")


class FailingPolicy:
    """A reflection model that raises (an out-of-memory GPU, a server gone away)."""

    name = "broken-policy"

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        raise RuntimeError("CUDA out of memory (simulated)")


class FailingRewriter(CountingRewriter):
    """Succeeds for the first ``ok`` rewrites, then raises."""

    name = "failing"

    def __init__(self, ok: int = 0) -> None:
        super().__init__()
        self.ok = ok

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        if self.calls >= self.ok:
            self.calls += 1
            raise TimeoutError("rewrite model did not answer")
        return super().rewrite(inp)


class FaultyASR(FixedASR):
    """An external tool that follows a script, one entry per call: ``"ok"`` (its fixed hypotheses),
    ``"raise"``, ``"garbage"`` (text that is not words) or ``"hang"`` (blocks until ``release`` is set);
    the last entry repeats. ``calls`` counts the calls that reached it."""

    def __init__(self, name: str, script: Sequence[str], texts: Sequence[str] = ("a cat on a hat",)) -> None:
        super().__init__(name, texts)
        self.script = list(script)
        self.calls = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        with self._lock:
            step = self.script[min(self.calls, len(self.script) - 1)]
            self.calls += 1
        if step == "raise":
            raise RuntimeError("the tool's server answered 500 (simulated)")
        if step == "garbage":
            return [Hypothesis(text="#@!% ^&*( )#@! %^&*", score=-0.1, source=self.name, rank=0)]
        if step == "hang":
            self.release.wait(60)
        return super().transcribe(audio, n_best)


class FakeClock:
    """A monotonic clock the test advances (``clock.now += 30``) instead of sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
