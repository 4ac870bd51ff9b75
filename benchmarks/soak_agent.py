"""The agent ``benchmarks/soak.py`` serves: the default agent (Whisper base internal, Whisper tiny.en
external, the shipped reflector) plus three external tools that fail at set rates, for
``speech-hands serve --agent benchmarks/soak_agent.py:soak_agent``.

- ``raising-asr`` raises (a server answering 500);
- ``hanging-asr`` sleeps ``SOAK_HANG_S`` seconds, past the agent's ``tool_timeout_s`` (a hung server);
- ``garbage-asr`` returns text that is not words (a model decoding noise).

When they do not fail they answer what tiny.en answers: the four tool calls of one request share one
tiny.en decode (:class:`SharedDecode`), so the faulty tools cost no model time of their own. Every
injected fault is appended to ``SOAK_FAULT_LOG`` (JSON lines: tool, kind, the run's thread id, time),
so the soak can check that each one was answered or traced.

Settings come from the environment (the factory takes no arguments but ``trace_db``; ``soak.py`` sets
them): ``SOAK_RAISE_RATE``, ``SOAK_HANG_RATE``, ``SOAK_GARBAGE_RATE`` (0..1), ``SOAK_HANG_S``,
``SOAK_TOOL_TIMEOUT_S``, ``SOAK_AFTER_FAILURES``, ``SOAK_PROBE_S``, ``SOAK_SEED``, ``SOAK_FAULT_LOG``.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

FAULT_KINDS = ("raise", "hang", "garbage")
GARBAGE = "#@!% ^&*( )#@! %^&*() @@@ ### !!! ~~~"


def _thread_id() -> str | None:
    """The thread id of the run that calls the tool (the tool runs with its node's config)."""
    from langchain_core.runnables.config import ensure_config

    return (ensure_config().get("configurable") or {}).get("thread_id")


class FaultLog:
    """Appends one JSON line per injected fault (thread-safe); a None path logs nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()

    def write(self, tool: str, kind: str) -> None:
        if self.path is None:
            return
        line = json.dumps({"tool": tool, "kind": kind, "thread_id": _thread_id(), "t": time.time()})
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


class SharedDecode:
    """An ASR backend whose result for one (audio, N-best size) is computed once and shared by every
    caller (the other tools of the same request); the last ``keep`` results are kept."""

    def __init__(self, inner: Any, keep: int = 64) -> None:
        self.inner = inner
        self.name = inner.name
        self.keep = keep
        self._lock = threading.Lock()
        self._results: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._pending: dict[tuple[str, int], threading.Lock] = {}

    def load(self) -> None:
        loader = getattr(self.inner, "load", None)
        if callable(loader):
            loader()

    def transcribe(self, audio: Any, n_best: int = 5) -> list[Any]:
        key = (audio.ref.sha256 or audio.id, n_best)
        with self._lock:
            if key in self._results:
                return list(self._results[key])
            gate = self._pending.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._results:
                    return list(self._results[key])
            found = self.inner.transcribe(audio, n_best=n_best)
            with self._lock:
                self._results[key] = list(found)
                while len(self._results) > self.keep:
                    self._results.popitem(last=False)
                self._pending.pop(key, None)
            return list(found)


class FaultyASR:
    """An external tool answering as ``inner`` except, with probability ``rate`` per call, its fault:
    ``raise``, ``hang`` (sleep ``hang_s``, then answer too late) or ``garbage``."""

    def __init__(
        self, name: str, inner: Any, kind: str, rate: float, *, hang_s: float, log: FaultLog, seed: int
    ) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        self.name, self.inner, self.kind, self.rate, self.hang_s, self.log = name, inner, kind, rate, hang_s, log
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def transcribe(self, audio: Any, n_best: int = 5) -> list[Any]:
        with self._lock:
            fault = self._random.random() < self.rate
        if not fault:
            return self.inner.transcribe(audio, n_best=n_best)
        self.log.write(self.name, self.kind)
        if self.kind == "raise":
            raise RuntimeError(f"{self.name}: injected fault (the tool's server answered 500)")
        if self.kind == "hang":
            time.sleep(self.hang_s)
            return self.inner.transcribe(audio, n_best=n_best)
        from speech_hands.types import Hypothesis

        return [Hypothesis(text=GARBAGE, score=-0.1, source=self.name, rank=0)]


def faulty_tools(inner: Any, env: dict[str, str] | None = None) -> list[Any]:
    """``inner`` shared, plus the three faulty tools over it, configured from ``env`` (default: os.environ)."""
    env = dict(os.environ if env is None else env)
    shared = SharedDecode(inner)
    log = FaultLog(env.get("SOAK_FAULT_LOG"))
    seed = int(env.get("SOAK_SEED", "0"))
    hang_s = float(env.get("SOAK_HANG_S", "20"))
    rates = {kind: float(env.get(f"SOAK_{kind.upper()}_RATE", "0.2")) for kind in FAULT_KINDS}
    names = {"raise": "raising-asr", "hang": "hanging-asr", "garbage": "garbage-asr"}
    faulty = [
        FaultyASR(names[kind], shared, kind, rates[kind], hang_s=hang_s, log=log, seed=seed + i)
        for i, kind in enumerate(FAULT_KINDS)
    ]
    return [shared, *faulty]


def agent_settings(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The AgentConfig fields the soak sets: the tool time limit and failover."""
    env = dict(os.environ if env is None else env)
    return {
        "tool_timeout_s": float(env.get("SOAK_TOOL_TIMEOUT_S", "8")),
        "failover": {
            "after_failures": int(env.get("SOAK_AFTER_FAILURES", "2")),
            "probe_interval_s": float(env.get("SOAK_PROBE_S", "10")),
            "max_probe_interval_s": max(60.0, float(env.get("SOAK_PROBE_S", "10"))),
        },
    }


def soak_agent(trace_db: str | None = None):
    """The served agent: the real default models plus the faulty tools (settings from the environment)."""
    from speech_hands import SpeechHands
    from speech_hands.assembly import build_parts, default_config

    parts = build_parts(default_config())
    (tiny,) = parts.external
    config = parts.agent.model_copy(update={"trace_db": trace_db})
    config = config.model_validate({**config.model_dump(), **agent_settings()})
    return SpeechHands(parts.omni, faulty_tools(tiny), config=config)
