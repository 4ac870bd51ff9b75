"""Tool calls with a time limit that a hanging tool cannot turn into a stuck agent.

Python cannot kill a thread, so a time limit can only stop *waiting* for a call. Running calls in a
shared thread pool then lets every hung call keep one worker forever: after ``max_workers`` hangs
every later call, healthy tools included, waits in the queue and times out, and the process never
exits because the pool's threads are joined at exit. Here instead:

- every call runs in its own daemon thread (the process can always exit), started with a copy of
  the caller's context variables; the graph also passes the node's run config to the tool
  explicitly (``tool.invoke(args, config)``), so its callbacks, tags and metadata reach the tool run;
- a tool whose call timed out and is still running is *isolated*: until that call returns, a new
  call to the same tool fails at once with :class:`ToolBusy` instead of starting a second thread
  that would hang too. Other tools are never affected.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ToolBusy(RuntimeError):
    """The tool is still running an earlier call that timed out."""


class ToolTimeout(TimeoutError):
    """The call did not return within its time limit (it may still be running)."""


class ToolCalls:
    """Runs tool calls under a time limit, one daemon thread each, isolating tools that hang."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stuck: dict[str, float] = {}  # tool name -> when its timed-out call started

    def stuck(self) -> dict[str, float]:
        """Tools whose timed-out call has not returned yet, with how long it has run (seconds)."""
        now = time.monotonic()
        with self._lock:
            return {name: now - started for name, started in self._stuck.items()}

    def call(self, name: str, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """``fn(*args)`` for tool ``name``: its result, or its exception, or :class:`ToolTimeout`
        after ``timeout_s`` (None: wait as long as it takes), or :class:`ToolBusy` at once."""
        with self._lock:
            if name in self._stuck:
                since = time.monotonic() - self._stuck[name]
                raise ToolBusy(
                    f"still running a call that timed out {since:.0f} s ago; not called again until it returns"
                )
        done = threading.Event()
        outcome: dict[str, Any] = {}
        started = time.monotonic()
        context = contextvars.copy_context()

        def run() -> None:
            try:
                outcome["value"] = context.run(fn, *args)
            except BaseException as exc:  # handed to the caller, or dropped if it gave up waiting
                outcome["error"] = exc
            finally:
                with self._lock:
                    if self._stuck.get(name) == started:
                        del self._stuck[name]
                done.set()

        threading.Thread(target=run, name=f"speech-hands-tool-{name}", daemon=True).start()
        if not done.wait(timeout_s):
            with self._lock:
                if not done.is_set():
                    self._stuck[name] = started
            if not done.is_set():
                raise ToolTimeout(f"no answer within {timeout_s} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
