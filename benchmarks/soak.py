"""Soak: ``speech-hands serve`` on loopback under concurrent clients and injected faults, for minutes.

The server is the real command in a subprocess on a free port, serving ``benchmarks/soak_agent.py``
(``--agent``): the default agent's real Whisper models plus three external tools that raise, hang past
the tool time limit, or return garbage, at the given rates (failover takes them out and probes them
back). ``--clients`` threads send, until ``--minutes`` have passed or ``--max-requests`` were sent:

- real LibriSpeech speech (``/work/shared/data/librispeech_other_dev``) to
  ``POST /v1/audio/transcriptions`` through the real ``openai`` client (``verbose_json``), and to
  ``POST /v1/process`` through httpx (JSON with base64, or multipart with a caller's N-best);
- bad uploads (``--bad-rate``): corrupt bytes (400), a body over ``--max-upload-mb`` (413), audio over
  ``--max-audio-s`` (413).

Reported: requests by kind and status, faults injected by kind (the agent logs each one with its
run's thread id), **lost** requests (no answer, a 5xx, or a status other than the documented one: 200,
400 / 413 for bad uploads, 503 + Retry-After when full) and **lost faults** (an injected fault whose
request did not come back with it traced: the tool's error in the candidates, or the implausible
candidate set aside in the notes), availability changes seen in the notes, p50 / p95 latency, and the
server's resident memory over time (``/proc/PID/status``; growth = median of the last third of the
samples after warm-up minus the first third). Exit status: 0 when nothing was lost and memory did not
grow past ``--max-rss-growth-mb``, 1 otherwise, 2 when the server did not start.

Run (on a shared machine, under the benchmark lock)::

    flock /tmp/bench.lock .venv/bin/python benchmarks/soak.py --clients 4 --minutes 3

Rows go to ``benchmarks/results/soak.json``, the section to ``benchmarks/RESULTS.md`` (``soak``
markers); ``--out`` / ``--json`` elsewhere for a trial.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
REPO = HERE.parent
DEFAULT_AGENT = f"{HERE / 'soak_agent.py'}:soak_agent"
GOOD_KINDS = ("transcription", "process_json", "process_nbest")
BAD_KINDS = ("corrupt", "oversized_body", "too_long")
#: the documented answers of each request kind (503 + Retry-After: every run slot and queue place taken)
EXPECTED = {
    "transcription": {200, 503},
    "process_json": {200, 503},
    "process_nbest": {200, 503},
    "corrupt": {400, 503},
    "oversized_body": {413},
    "too_long": {413, 503},
}
CHANGES = {
    "unavailable": "marked unavailable",
    "probing": "probing it again",
    "probe_failed": "probe failed",
    "restored": "restored (good answer",
}


@dataclass
class Outcome:
    kind: str
    endpoint: str
    status: int | None  # None: no answer
    latency_s: float
    lost: str | None = None  # why the request counts as lost
    thread_id: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (None: the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def speech_files(data: Path | None, limit: int | None) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the LibriSpeech dev utterances."""
    from speech_hands.datasets.builtin import librispeech_dev

    manifest = librispeech_dev(data).select(limit=limit)
    return [(Path(manifest.audio_path(item)).name, Path(manifest.audio_path(item)).read_bytes()) for item in manifest]


def long_silence_flac(seconds: float) -> bytes:
    """A small FLAC file lasting ``seconds`` (near-silence compresses to almost nothing)."""
    import numpy as np
    import soundfile as sf

    buffer = io.BytesIO()
    samples = (np.random.default_rng(0).standard_normal(int(seconds * 16_000)) * 1e-4).astype(np.float32)
    sf.write(buffer, samples, 16_000, format="FLAC")
    return buffer.getvalue()


class Budget:
    """At most ``limit`` requests in all, taken by the clients one at a time."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


class Soak:
    """The clients, the memory sampler and what they saw."""

    def __init__(self, args: argparse.Namespace, url: str, files: list[tuple[str, bytes]]) -> None:
        self.args, self.url, self.files = args, url, files
        self.outcomes: list[Outcome] = []
        self.rss: list[tuple[float, float]] = []
        self.health_seen: Counter[str] = Counter()  # /healthz status -> samples
        self.in_flight = 0
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.budget = Budget(args.max_requests)
        self.oversized = os.urandom(int(args.max_upload_mb * 1024 * 1024) + 4096)
        self.too_long = long_silence_flac(args.max_audio_s + 5)

    # ------------------------------------------------------------------ requests

    def pick(self, rng: random.Random) -> str:
        if rng.random() < self.args.bad_rate:
            return rng.choice(BAD_KINDS)
        return rng.choices(GOOD_KINDS, weights=(0.5, 0.3, 0.2))[0]

    def payload(self, kind: str, rng: random.Random) -> tuple[str, bytes]:
        if kind == "corrupt":
            return "corrupt.flac", os.urandom(rng.randint(200, 20_000))
        if kind == "oversized_body":
            return "oversized.flac", self.oversized
        if kind == "too_long":
            return "too-long.flac", self.too_long
        return rng.choice(self.files)

    def send(self, kind: str, rng: random.Random, openai_client: Any, http: Any) -> Outcome:
        import httpx
        import openai

        name, data = self.payload(kind, rng)
        endpoint = (
            "transcriptions" if kind == "transcription" or (kind in BAD_KINDS and rng.random() < 0.5) else "process"
        )
        started = time.perf_counter()
        status: int | None = None
        body: Any = None
        try:
            if endpoint == "transcriptions":
                raw = openai_client.audio.transcriptions.with_raw_response.create(
                    model="speech-hands", file=(name, data), response_format="verbose_json"
                )
                parsed = raw.parse()  # the openai client's own model of the answer
                status, body = raw.http_response.status_code, raw.http_response.json()
                if not isinstance(parsed.text, str):
                    raise ValueError("no text in the transcription")
            elif kind == "process_nbest":
                response = http.post(
                    "/v1/process",
                    files={"file": (name, data)},
                    data={"external_nbest": '["a caller n best", "a caller"]'},
                )
                status, body = response.status_code, _json(response)
            elif kind in BAD_KINDS and rng.random() < 0.5:
                response = http.post("/v1/process", files={"file": (name, data)})
                status, body = response.status_code, _json(response)
            else:
                response = http.post("/v1/process", json={"audio_b64": base64.b64encode(data).decode()})
                status, body = response.status_code, _json(response)
        except openai.APIStatusError as exc:
            status, body = exc.status_code, _json(exc.response)
        except (openai.APIConnectionError, httpx.HTTPError, ValueError) as exc:
            return Outcome(kind, endpoint, None, time.perf_counter() - started, lost=f"{type(exc).__name__}: {exc}")
        outcome = Outcome(kind, endpoint, status, time.perf_counter() - started)
        if status not in EXPECTED[kind]:
            outcome.lost = f"status {status} for {kind}: {str(body)[:200]}"
        elif status == 200:
            answer = body.get("text") if endpoint == "transcriptions" else body.get("final_answer")
            if not isinstance(answer, str) or not body.get("thread_id"):
                outcome.lost = f"a 200 without an answer or thread id: {str(body)[:200]}"
            outcome.thread_id = body.get("thread_id")
            outcome.candidates, outcome.notes = body.get("candidates") or [], body.get("notes") or []
        elif status >= 400 and not (isinstance(body, dict) and body.get("error", {}).get("message")):
            outcome.lost = f"a {status} without an error message"
        return outcome

    def client(self, index: int) -> None:
        import httpx
        import openai

        rng = random.Random(self.args.seed * 1000 + index)
        timeout = self.args.request_timeout_s
        openai_client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="soak", max_retries=0, timeout=timeout)
        with httpx.Client(base_url=self.url, timeout=timeout) as http:
            while not self.stop.is_set() and self.budget.take():
                kind = self.pick(rng)
                with self._lock:
                    self.in_flight += 1
                outcome = self.send(kind, rng, openai_client, http)
                with self._lock:
                    self.in_flight -= 1
                    self.outcomes.append(outcome)
                if outcome.status == 503:
                    self.stop.wait(1.0)  # the server's Retry-After

    def sample(self, pid: int, started: float) -> None:
        import httpx

        while not self.stop.is_set():
            found = rss_mb(pid)
            if found is not None:
                self.rss.append((time.monotonic() - started, found))
            try:
                self.health_seen[httpx.get(f"{self.url}/healthz", timeout=5).json()["status"]] += 1
            except (httpx.HTTPError, ValueError, KeyError):
                self.health_seen["no answer"] += 1
            self.stop.wait(self.args.rss_every_s)

    # ------------------------------------------------------------------ the run

    def run(self, pid: int) -> float:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        started = time.monotonic()
        duration = self.args.minutes * 60
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(self.args.clients)]
        sampler = threading.Thread(target=self.sample, args=(pid, started), daemon=True)
        for thread in [sampler, *threads]:
            thread.start()
        columns = (TextColumn("soak"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, disable=self.args.quiet) as progress:
            task = progress.add_task("soak", total=duration, status="")
            while time.monotonic() - started < duration and any(t.is_alive() for t in threads):
                time.sleep(0.5)
                progress.update(task, completed=min(duration, time.monotonic() - started), status=self.status_line())
            self.stop.set()
            # the requests in flight get their answer (bounded: a request times out on the client)
            deadline = time.monotonic() + self.args.request_timeout_s + 5
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            progress.update(task, completed=duration, status=self.status_line())
        with self._lock:
            for _ in range(sum(t.is_alive() for t in threads)):
                self.outcomes.append(Outcome("?", "?", None, 0.0, lost="still waiting for an answer at the end"))
        return time.monotonic() - started

    def status_line(self) -> str:
        with self._lock:
            outcomes = list(self.outcomes)
        statuses = Counter(o.status for o in outcomes)
        lost = sum(o.lost is not None for o in outcomes)
        rss = f"{self.rss[-1][1]:.0f} MB" if self.rss else "?"
        shown = " ".join(f"{k}:{v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0])))
        return f"{len(outcomes)} requests ({shown}) lost {lost} | RSS {rss} | health {dict(self.health_seen)}"


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"raw": response.text[:200]}


# ---------------------------------------------------------------------- accounting


def account_faults(faults: list[dict[str, Any]], outcomes: list[Outcome]) -> dict[str, Any]:
    """Each injected fault matched with its request's answer: traced (the tool's error in the
    candidates, or a note that set its candidate aside) or lost."""
    answered = {o.thread_id: o for o in outcomes if o.status == 200 and o.thread_id}
    injected: Counter[str] = Counter(f["kind"] for f in faults)
    traced: Counter[str] = Counter()
    lost: list[dict[str, Any]] = []
    for fault in faults:
        outcome = answered.get(fault.get("thread_id"))
        tool = fault["tool"]
        ok = outcome is not None and (
            any(c.get("tool") == tool and c.get("error") for c in outcome.candidates)
            or any(f"tool {tool}: set aside an implausible candidate" in n for n in outcome.notes)
        )
        if ok:
            traced[fault["kind"]] += 1
        else:
            lost.append(fault)
    return {"injected": dict(injected), "traced": dict(traced), "lost": lost}


def availability_changes(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """Per tool, how many of each availability change the answers' notes report, and how many
    requests left it out (not called)."""
    seen: dict[str, Counter[str]] = {}
    for outcome in outcomes:
        for note in outcome.notes:
            for change, text in CHANGES.items():
                if note.startswith("tool ") and text in note:
                    seen.setdefault(note.split()[1].rstrip(":"), Counter())[change] += 1
        for candidate in outcome.candidates:
            if (candidate.get("error") or "").startswith("ToolUnavailable"):
                seen.setdefault(candidate["tool"], Counter())["not_called"] += 1
    return {tool: dict(counts) for tool, counts in sorted(seen.items())}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def rss_summary(samples: list[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    steady = [mb for t, mb in samples if t >= warmup_s] or [mb for _, mb in samples]
    if not steady:
        return {"samples": 0}
    third = max(1, len(steady) // 3)
    first, last = statistics.median(steady[:third]), statistics.median(steady[-third:])
    return {
        "samples": len(samples),
        "start_mb": round(samples[0][1], 1),
        "peak_mb": round(max(mb for _, mb in samples), 1),
        "end_mb": round(samples[-1][1], 1),
        "first_third_median_mb": round(first, 1),
        "last_third_median_mb": round(last, 1),
        "growth_mb": round(last - first, 1),
        "timeline": [(round(t, 1), round(mb, 1)) for t, mb in samples[:: max(1, len(samples) // 12)]],
    }


def summarise(args: argparse.Namespace, soak: Soak, faults: list[dict[str, Any]], wall_s: float, server_rc) -> dict:
    outcomes = soak.outcomes
    good = [o for o in outcomes if o.kind in GOOD_KINDS and o.status == 200]
    accounted = account_faults(faults, outcomes)
    rss = rss_summary(soak.rss, warmup_s=min(30.0, args.minutes * 60 / 4))
    lost = [o for o in outcomes if o.lost]
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(["benchmarks/soak.py", *sys.argv[1:]]),
        "clients": args.clients,
        "minutes": args.minutes,
        "wall_s": round(wall_s, 1),
        "rates": {"raise": args.raise_rate, "hang": args.hang_rate, "garbage": args.garbage_rate, "bad": args.bad_rate},
        "tool_timeout_s": args.tool_timeout_s,
        "hang_s": args.hang_s,
        "after_failures": args.after_failures,
        "max_concurrent": args.max_concurrent,
        "probe_s": args.probe_s,
        "requests": len(outcomes),
        "by_kind": dict(Counter(o.kind for o in outcomes)),
        "by_status": {str(k): v for k, v in Counter(o.status for o in outcomes).items()},
        "lost": len(lost),
        "lost_examples": [o.lost for o in lost[:5]],
        "faults_injected": accounted["injected"],
        "faults_traced": accounted["traced"],
        "faults_lost": len(accounted["lost"]),
        "faults_lost_examples": accounted["lost"][:5],
        "availability": availability_changes(outcomes),
        "health_samples": dict(soak.health_seen),
        "latency_s": {
            "speech_p50": percentile([o.latency_s for o in good], 0.5),
            "speech_p95": percentile([o.latency_s for o in good], 0.95),
            "bad_upload_p50": percentile([o.latency_s for o in outcomes if o.kind in BAD_KINDS], 0.5),
            "bad_upload_p95": percentile([o.latency_s for o in outcomes if o.kind in BAD_KINDS], 0.95),
        },
        "rss": rss,
        "server_exit_code": server_rc,
    }


# ---------------------------------------------------------------------- server


def start_server(args: argparse.Namespace, folder: Path, port: int, fault_log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "SPEECH_HANDS_HOME": str(folder / "home"),
        "SOAK_RAISE_RATE": str(args.raise_rate),
        "SOAK_HANG_RATE": str(args.hang_rate),
        "SOAK_GARBAGE_RATE": str(args.garbage_rate),
        "SOAK_HANG_S": str(args.hang_s),
        "SOAK_TOOL_TIMEOUT_S": str(args.tool_timeout_s),
        "SOAK_AFTER_FAILURES": str(args.after_failures),
        "SOAK_PROBE_S": str(args.probe_s),
        "SOAK_SEED": str(args.seed),
        "SOAK_FAULT_LOG": str(fault_log),
    }
    command = [
        sys.executable, "-m", "speech_hands.cli", "serve", "--agent", args.agent, "--port", str(port),
        "--trace-db", str(folder / "traces.sqlite"), "--max-upload-mb", str(args.max_upload_mb),
        "--max-audio-s", str(args.max_audio_s), "--max-concurrent", str(args.max_concurrent),
        "--max-queue", str(args.max_queue), "--log-level", "warning",
    ]  # fmt: skip
    log = (folder / "server.log").open("w")
    return subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(process: subprocess.Popen, url: str, timeout_s: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def stop_server(process: subprocess.Popen) -> int | None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


# ---------------------------------------------------------------------- report


def print_report(f: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"soak: {f['clients']} clients x {f['minutes']} min ({f['wall_s']} s)")
    table.add_column("figure")
    table.add_column("value")
    for name, value in rows(f):
        table.add_row(name, value)
    Console().print(table)


def rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    lat, rss = f["latency_s"], f["rss"]
    faults = ", ".join(
        f"{k} {v} (traced {f['faults_traced'].get(k, 0)})" for k, v in sorted(f["faults_injected"].items())
    )
    changes = "; ".join(
        f"{tool}: {', '.join(f'{k} {v}' for k, v in c.items())}" for tool, c in f["availability"].items()
    )
    return [
        ("requests", f"{f['requests']} ({', '.join(f'{k} {v}' for k, v in sorted(f['by_kind'].items()))})"),
        ("answers by status", ", ".join(f"{k}: {v}" for k, v in sorted(f["by_status"].items()))),
        ("lost requests", str(f["lost"])),
        ("faults injected (by kind)", faults or "none"),
        ("lost faults (not answered or not traced)", str(f["faults_lost"])),
        ("availability changes (from the notes)", changes or "none"),
        ("/healthz samples", ", ".join(f"{k} {v}" for k, v in f["health_samples"].items())),
        ("latency of speech requests p50 / p95 (s)", f"{lat['speech_p50']} / {lat['speech_p95']}"),
        ("latency of bad uploads p50 / p95 (s)", f"{lat['bad_upload_p50']} / {lat['bad_upload_p95']}"),
        (
            "server RSS (MB): start, peak, end",
            f"{rss.get('start_mb')}, {rss.get('peak_mb')}, {rss.get('end_mb')}",
        ),
        (
            "RSS growth after warm-up (MB)",
            f"{rss.get('growth_mb')} (median of the first third {rss.get('first_third_median_mb')}, "
            f"of the last third {rss.get('last_third_median_mb')}; {rss.get('samples')} samples)",
        ),
        ("RSS over time (s, MB)", " ".join(f"{t}:{mb:.0f}" for t, mb in rss.get("timeline", []))),
        ("server exit status after SIGTERM", str(f["server_exit_code"])),
    ]


def write_markdown(path: Path, f: dict[str, Any]) -> None:
    """Replace the soak section of RESULTS.md, keeping every other section."""
    table = "\n".join(f"| {name} | {value} |" for name, value in rows(f))
    rates = f["rates"]
    section = f"""<!-- soak:start -->
## Soak (`benchmarks/soak.py`)

{f["date"]}, {f["machine"]}: `speech-hands serve` (the default agent's real Whisper base + tiny.en, the
shipped reflector, plus `raising-asr`, `hanging-asr` and `garbage-asr` failing at rates
{rates["raise"]} / {rates["hang"]} / {rates["garbage"]}, a hang lasting {f["hang_s"]} s against a
{f["tool_timeout_s"]} s tool time limit; failover after {f["after_failures"]} consecutive failures, probes every
{f["probe_s"]} s with backoff) on loopback, {f["clients"]} concurrent clients for {f["minutes"]} min, bad uploads at rate
{rates["bad"]}. `{f["command"]}`

| figure | value |
|---|---|
{table}

Latencies are the clients' (send to answer): with `--max-concurrent {f["max_concurrent"]}` they include the wait
for the run slot behind the other clients' runs, and so do the corrupt and too-long uploads (decoded inside
the slot); a body over the size limit is refused before it (413). A fault is *traced* when its request's
answer carries it (the tool's error in `candidates`, or the note that set its candidate aside); the server's
`-15` is uvicorn re-raising SIGTERM after its clean shutdown.
<!-- soak:end -->
"""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if "<!-- soak:start -->" in text:
        head, rest = text.split("<!-- soak:start -->", 1)
        text = head + section + rest.split("<!-- soak:end -->", 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=5000, help="stop after this many requests in all")
    parser.add_argument("--raise-rate", type=float, default=0.15)
    parser.add_argument("--hang-rate", type=float, default=0.1)
    parser.add_argument("--garbage-rate", type=float, default=0.15)
    parser.add_argument("--bad-rate", type=float, default=0.15, help="share of corrupt / oversized uploads")
    parser.add_argument("--tool-timeout-s", type=float, default=8.0)
    parser.add_argument("--hang-s", type=float, default=20.0)
    parser.add_argument("--after-failures", type=int, default=2)
    parser.add_argument("--probe-s", type=float, default=10.0)
    parser.add_argument("--max-upload-mb", type=float, default=2.0)
    parser.add_argument("--max-audio-s", type=float, default=60.0)
    parser.add_argument("--max-concurrent", type=int, default=1)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--request-timeout-s", type=float, default=180.0)
    parser.add_argument("--rss-every-s", type=float, default=2.0)
    parser.add_argument("--max-rss-growth-mb", type=float, default=150.0)
    parser.add_argument("--startup-timeout-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use the first N dev utterances")
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder")
    parser.add_argument("--agent", default=DEFAULT_AGENT, help="the served agent (serve --agent)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "soak.json")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.minutes <= 0 or args.max_requests < 1:
        parser.error("--clients, --minutes and --max-requests must be positive")
    for name in ("raise_rate", "hang_rate", "garbage_rate", "bad_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be within 0..1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = speech_files(args.data, args.limit)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        folder = Path(tmp)
        fault_log = folder / "faults.jsonl"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_server(args, folder, port, fault_log)
        try:
            if not wait_ready(process, url, args.startup_timeout_s):
                print(
                    f"error: the server did not start:\n{(folder / 'server.log').read_text()[-3000:]}", file=sys.stderr
                )
                return 2
            soak = Soak(args, url, files)
            wall_s = soak.run(process.pid)
        finally:
            server_rc = stop_server(process)
        faults = [json.loads(line) for line in fault_log.read_text().splitlines()] if fault_log.exists() else []
    figures = summarise(args, soak, faults, wall_s, server_rc)
    print_report(figures)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    write_markdown(args.out, figures)
    failed = (
        figures["lost"] or figures["faults_lost"] or (figures["rss"].get("growth_mb") or 0) > args.max_rss_growth_mb
    )
    if failed:
        print(
            f"soak FAILED: {figures['lost']} lost requests {figures['lost_examples']}, {figures['faults_lost']} lost "
            f"faults {figures['faults_lost_examples']}, RSS growth {figures['rss'].get('growth_mb')} MB",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
