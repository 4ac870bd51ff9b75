"""Per-run checkpoint overhead: the same routing run over the in-memory saver, SQLite and PostgreSQL.

The tools answer at once (fixed N-best lists, no model), so a run's wall time is the graph plus its
checkpoints; the in-memory saver is the baseline and "overhead" is a saver's median minus its median.
PostgreSQL is a real server started for the run on a loopback port (Debian's binaries, the tests' helper
``tests/postgres.py``; ``fsync=off``, so disk flushes are not counted for it, while SQLite runs with its
defaults). Sync runs (``invoke``: the ``PostgresSaver`` pool) and async runs (``ainvoke``: one
``AsyncPostgresSaver`` / ``AsyncSqliteSaver`` connection per run) are both timed.

Printed and written to ``benchmarks/RESULTS.md`` (section ``checkpointer``) and ``results/checkpointer.json``.

Run: ``.venv/bin/python benchmarks/checkpointer.py [--runs 200]`` (needs the ``postgres`` extra and
PostgreSQL's server binaries). One run on one machine; absolute milliseconds depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from speech_hands import AgentConfig, SpeechHands
from speech_hands.audio import AudioInput, load_audio
from speech_hands.backends.composed import ComposedOmni
from speech_hands.reflection.confidence import ConfidencePolicy
from speech_hands.reflection.rewrite import AlignmentVotingRewriter
from speech_hands.types import Hypothesis

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the PostgreSQL start/stop helper the tests use


class InstantASR:
    """A tool that answers at once with a fixed N-best list (the saver, not a model, is measured)."""

    def __init__(self, name: str, texts: list[str]) -> None:
        self.name, self.texts = name, texts

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        return [Hypothesis(text=t, score=-0.2 - 0.1 * i, source=self.name) for i, t in enumerate(self.texts[:n_best])]


def make_agent(location: str) -> SpeechHands:
    internal = InstantASR("internal", ["the cat sat on the mat", "the cat sat on a mat"])
    external = InstantASR("external", ["the cat sat on the hat", "a cat sat on the hat"])
    omni = ComposedOmni(internal, ConfidencePolicy(), AlignmentVotingRewriter())
    return SpeechHands(omni, [external], config=AgentConfig(trace_db=location, detect_speech=False))


def clip(folder: Path) -> AudioInput:
    import soundfile as sf

    t = np.arange(16_000) / 16_000
    path = folder / "tone.wav"
    sf.write(str(path), (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000)
    return load_audio(path)


def time_runs(agent: SpeechHands, audio: AudioInput, runs: int, label: str, *, use_async: bool) -> list[float]:
    seconds = []
    for i in track(range(runs), description=label, transient=True):
        start = time.perf_counter()
        if use_async:
            asyncio.run(agent.ainvoke(audio, thread_id=f"{label}-{i}"))
        else:
            agent.invoke(audio, thread_id=f"{label}-{i}")
        seconds.append(time.perf_counter() - start)
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "mean_ms": 1000 * statistics.fmean(ordered),
    }


def checkpoints_per_run(agent: SpeechHands, thread: str) -> int:
    return sum(1 for _ in agent.checkpointer.list({"configurable": {"thread_id": thread}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per saver and mode")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    console = Console()
    from postgres import postgres_server

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, postgres_server() as server:
        audio = clip(Path(tmp))
        locations = {
            "memory": ":memory:",
            "sqlite": str(Path(tmp) / "traces.sqlite"),
            "postgres": server.create_database("bench"),
        }
        for saver, location in locations.items():
            agent = make_agent(location)
            with agent:
                for use_async in (False, True):
                    mode = "ainvoke" if use_async else "invoke"
                    time_runs(agent, audio, args.warmup, f"warmup-{saver}-{mode}", use_async=use_async)
                    seconds = time_runs(agent, audio, args.runs, f"{saver}-{mode}", use_async=use_async)
                    rows.append({"saver": saver, "mode": mode, "runs": args.runs, **summary(seconds)})
                per_run = checkpoints_per_run(agent, f"{saver}-invoke-0")
                for row in rows:
                    if row["saver"] == saver:
                        row["checkpoints_per_run"] = per_run
    base = {r["mode"]: r["median_ms"] for r in rows if r["saver"] == "memory"}
    for row in rows:
        row["overhead_ms"] = row["median_ms"] - base[row["mode"]]
    table = Table(title="per-run checkpoint overhead")
    for column in ("saver", "mode", "median ms", "p95 ms", "overhead ms", "checkpoints/run"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["saver"],
            r["mode"],
            f"{r['median_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['overhead_ms']:+.2f}",
            str(r["checkpoints_per_run"]),
        )
    console.print(table)
    facts = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "postgres": server.bin.parent.name,
        "rows": rows,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "checkpointer.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    write_markdown(args.out, facts)


def write_markdown(path: Path, facts: dict) -> None:
    """Replace the checkpointer section of RESULTS.md, keeping any other sections."""
    lines = [
        "<!-- checkpointer:start -->",
        "## Checkpoint overhead per run: in memory, SQLite, PostgreSQL (`benchmarks/checkpointer.py`)",
        "",
        f"{facts['date']}, {facts['machine']}, PostgreSQL {facts['postgres']} on loopback (fsync off), SQLite",
        "with its defaults. One routing run on a 1 s clip with tools that answer at once (the confidence",
        "baseline decides), so the time is the graph and its checkpoints; overhead = median minus the",
        "in-memory saver's median in the same mode. `ainvoke` opens one async connection per run.",
        "",
        "| saver | mode | runs | median (ms) | p95 (ms) | overhead (ms) | checkpoints per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in facts["rows"]:
        lines.append(
            f"| {r['saver']} | {r['mode']} | {r['runs']} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | "
            f"{r['overhead_ms']:+.2f} | {r['checkpoints_per_run']} |"
        )
    lines.append("<!-- checkpointer:end -->")
    section = "\n".join(lines)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(r"<!-- checkpointer:start -->.*?<!-- checkpointer:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
