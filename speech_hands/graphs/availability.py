"""Failover of external perception tools: which tools take part in routing now.

Like LiveKit Agents' ``FallbackAdapter`` for speech-to-text, but over the agent's parallel tools: an
external tool whose calls fail ``after_failures`` times in a row (it raised, timed out, was still busy
with a call that timed out, or returned only implausible candidates) is marked *unavailable*. Routing
goes on with the other tools, and the unavailable one is not called at all, so requests stop paying
its time-out. After ``probe_interval_s`` one request calls it again (a *probe*); a good answer
restores it at once, a failed probe multiplies the interval by ``probe_backoff`` (at most
``max_probe_interval_s``). Every change is a :class:`~speech_hands.graphs.events.ToolAvailability`
event, written by the graph into the run's custom stream and its trace notes.

One :class:`Availability` belongs to one agent and is shared by all its runs (threads, requests); it
is thread-safe. The clock is injectable (tests advance it instead of sleeping)::

    availability = Availability(["tiny.en"], FailoverConfig(after_failures=2), clock=time.monotonic)
    admission = availability.admit("tiny.en")     # call it? is this call a probe?
    change = availability.record("tiny.en", error="TimeoutError: no answer", probe=admission.probe)
    availability.status()                         # ToolStatus per tool, for health checks

Tools not named at construction (the internal model, a caller's per-request N-best) are always
admitted and never tracked: the internal model is the agent itself (docs/failover.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from speech_hands.config import FailoverConfig
from speech_hands.graphs.events import ToolAvailability

__all__ = ["Admission", "Availability", "ToolStatus"]


class ToolStatus(BaseModel):
    """One tool's availability, as health checks report it."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: str = "external"
    failover: bool = Field(description="whether failover can take this tool out of routing")
    available: bool
    consecutive_failures: int = 0
    failures: int = Field(default=0, description="failed calls since the agent started")
    calls: int = Field(default=0, description="calls since the agent started (probes included)")
    last_error: str | None = None
    unavailable_for_s: float | None = None
    next_probe_in_s: float | None = Field(default=None, description="0: the next request probes it")
    stuck_for_s: float | None = Field(default=None, description="a call that timed out has run this long")


@dataclass(frozen=True)
class Admission:
    """Whether a run calls the tool: ``call`` (``probe``: the call tests an unavailable tool), else
    ``reason`` says why not; ``change`` is the availability event the admission itself caused."""

    call: bool
    probe: bool = False
    reason: str | None = None
    change: ToolAvailability | None = None


@dataclass
class _Track:
    available: bool = True
    consecutive: int = 0
    failures: int = 0
    calls: int = 0
    last_error: str | None = None
    unavailable_since: float | None = None
    next_probe_at: float | None = None
    interval_s: float = 0.0


class Availability:
    """Thread-safe availability of the named tools under ``config``; ``clock`` returns seconds."""

    def __init__(
        self, tools: Iterable[str], config: FailoverConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or FailoverConfig()
        self.clock = clock
        self._lock = threading.Lock()
        self._tracks = {name: _Track(interval_s=self.config.probe_interval_s) for name in tools}

    @property
    def enabled(self) -> bool:
        return self.config.after_failures is not None

    def tracked(self, name: str) -> bool:
        return self.enabled and name in self._tracks

    def admit(self, name: str) -> Admission:
        """Whether a run starting now calls ``name``: an available tool yes; an unavailable one only
        once its probe is due (this run probes it; the next probe is pushed back by one interval, so
        concurrent runs do not all probe), else not, with the reason."""
        if not self.tracked(name):
            return Admission(call=True)
        with self._lock:
            track, now = self._tracks[name], self.clock()
            if track.available:
                return Admission(call=True)
            assert track.next_probe_at is not None and track.unavailable_since is not None
            if now >= track.next_probe_at:
                track.next_probe_at = now + track.interval_s
                message = (
                    f"tool {name}: probing it again (unavailable for {now - track.unavailable_since:.0f} s after "
                    f"{track.consecutive} consecutive failures)"
                )
                return Admission(call=True, probe=True, change=self._event(name, track, "probing", message, now))
            reason = (
                f"unavailable for {now - track.unavailable_since:.0f} s after {track.consecutive} consecutive "
                f"failures (last: {track.last_error}); next probe in {track.next_probe_at - now:.0f} s"
            )
            return Admission(call=False, reason=reason)

    def record(self, name: str, error: str | None, *, probe: bool = False) -> ToolAvailability | None:
        """The outcome of one call of ``name`` (``error`` None: a good answer); the availability
        change it caused (marked unavailable, a failed probe, restored), if any."""
        if not self.tracked(name):
            return None
        after = self.config.after_failures
        assert after is not None
        with self._lock:
            track, now = self._tracks[name], self.clock()
            track.calls += 1
            if error is None:
                track.consecutive = 0
                if track.available:
                    return None
                down = now - (track.unavailable_since or now)
                track.available, track.unavailable_since, track.next_probe_at = True, None, None
                track.interval_s = self.config.probe_interval_s
                return self._event(
                    name, track, "restored", f"tool {name}: restored (good answer after {down:.0f} s)", now
                )
            track.consecutive += 1
            track.failures += 1
            track.last_error = error
            if track.available:
                if track.consecutive < after:
                    return None
                track.available, track.unavailable_since = False, now
                track.interval_s = self.config.probe_interval_s
                track.next_probe_at = now + track.interval_s
                message = (
                    f"tool {name}: marked unavailable after {track.consecutive} consecutive failures (last: {error}); "
                    f"routing goes on without it; probed again in {track.interval_s:.0f} s"
                )
                return self._event(name, track, "unavailable", message, now, error=error)
            if not probe:  # a call admitted before the tool was marked unavailable
                return None
            track.interval_s = min(track.interval_s * self.config.probe_backoff, self.config.max_probe_interval_s)
            track.next_probe_at = now + track.interval_s
            message = f"tool {name}: probe failed ({error}); still unavailable, next probe in {track.interval_s:.0f} s"
            return self._event(name, track, "probe_failed", message, now, error=error)

    def status(self) -> dict[str, ToolStatus]:
        """Every tracked tool's status, by name."""
        with self._lock:
            now = self.clock()
            return {
                name: ToolStatus(
                    name=name,
                    failover=self.enabled,
                    available=t.available,
                    consecutive_failures=t.consecutive,
                    failures=t.failures,
                    calls=t.calls,
                    last_error=t.last_error,
                    unavailable_for_s=round(now - t.unavailable_since, 3) if t.unavailable_since is not None else None,
                    next_probe_in_s=round(max(0.0, t.next_probe_at - now), 3) if t.next_probe_at is not None else None,
                )
                for name, t in self._tracks.items()
            }

    @staticmethod
    def _event(
        name: str, track: _Track, change: str, message: str, now: float, *, error: str | None = None
    ) -> ToolAvailability:
        next_in = round(track.next_probe_at - now, 3) if track.next_probe_at is not None else None
        return ToolAvailability(
            tool=name,
            change=change,  # type: ignore[arg-type]
            available=track.available,
            consecutive_failures=track.consecutive,
            error=error,
            next_probe_in_s=next_in,
            message=message,
        )
