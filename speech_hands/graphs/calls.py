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
  that would hang too. Other tools are never affected;
- a timed-out call still running native code when the process exits would abort it: once the
  interpreter finalises, the thread returning from C++ (CTranslate2, PyTorch) is ended with a forced
  unwind, and the C++ runtime calls ``std::terminate`` ("terminate called without an active
  exception", exit status 134, the real exit code lost). So an exiting process first waits up to
  :func:`exit_grace_s` for such calls (an ``atexit`` hook, which runs before finalisation). The CLI,
  which knows its exit code, goes further (:func:`exit_process`): if a call is still running after
  the wait, it flushes its output and ends without finalising (``os._exit``), keeping the code. The
  hook cannot know the code, so it lets the interpreter finish as usual (a pure-Python hang is safe
  to abandon; a native one that outlives the wait may still abort, as before).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How long an exiting process waits for timed-out calls still running, unless
#: ``$SPEECH_HANDS_EXIT_GRACE_S`` says otherwise (seconds; a timed-out CTranslate2 decode of one
#: 30 s window with 5 beams ends well within it on 2 cores)
EXIT_GRACE_S = 10.0


def exit_grace_s() -> float:
    """The wait at exit for timed-out calls (``$SPEECH_HANDS_EXIT_GRACE_S``, else :data:`EXIT_GRACE_S`)."""
    value = os.environ.get("SPEECH_HANDS_EXIT_GRACE_S")
    try:
        return max(0.0, float(value)) if value else EXIT_GRACE_S
    except ValueError:
        log.warning("SPEECH_HANDS_EXIT_GRACE_S=%r is not a number of seconds; using %s", value, EXIT_GRACE_S)
        return EXIT_GRACE_S


_timed_out_lock = threading.Lock()
_timed_out: set[threading.Thread] = set()  # threads of timed-out calls still running, process-wide


def timed_out_calls() -> int:
    """How many calls that timed out are still running in this process (any agent)."""
    with _timed_out_lock:
        return len(_timed_out)


def wait_for_timed_out_calls(timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the timed-out calls still running; True when none is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        with _timed_out_lock:
            threads = list(_timed_out)
        if not threads:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        threads[0].join(remaining)


def _wait_before_exit(grace_s: float) -> bool:
    """Wait for the timed-out calls still running, saying so; True when none is left."""
    if not timed_out_calls():
        return True
    log.warning("waiting up to %.0f s for %d tool call(s) that timed out and still run", grace_s, timed_out_calls())
    return wait_for_timed_out_calls(grace_s)


def _end_now(code: int) -> NoReturn:
    log.error(
        "%d tool call(s) that timed out still running; exiting (code %d) without finalising the interpreter "
        "(a native call returning during finalisation would abort the process)",
        timed_out_calls(),
        code,
    )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: nothing more to save
            stream.flush()
    logging.shutdown()
    os._exit(code)


def exit_process(code: int, grace_s: float | None = None) -> NoReturn:
    """``sys.exit(code)``, after waiting (up to ``grace_s``, default :func:`exit_grace_s`) for
    timed-out tool calls still running; if one still is, the process ends at once with ``code``."""
    if _wait_before_exit(exit_grace_s() if grace_s is None else grace_s):
        sys.exit(code)
    _end_now(code)


@atexit.register
def _wait_at_exit() -> None:
    """Runs before the interpreter finalises (daemon threads may still return into Python then)."""
    if not _wait_before_exit(exit_grace_s()):
        log.warning("exiting with %d timed-out tool call(s) still running", timed_out_calls())


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
                with _timed_out_lock:
                    _timed_out.discard(thread)

        thread = threading.Thread(target=run, name=f"speech-hands-tool-{name}", daemon=True)
        thread.start()
        if not done.wait(timeout_s):
            with self._lock:
                timed_out = not done.is_set()
                if timed_out:
                    self._stuck[name] = started
                    with _timed_out_lock:
                        _timed_out.add(thread)
            if timed_out:
                raise ToolTimeout(f"no answer within {timeout_s} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
