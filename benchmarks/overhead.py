"""Agent overhead vs calling the same models directly, on the 60 LibriSpeech dev utterances.

Three ways to get the same two N-best lists (Whisper base = internal, Whisper tiny.en = external):

1. direct, sequential: base then tiny.en, one after the other;
2. direct, parallel: both at once in two threads (what perception fan-out should achieve);
3. the agent: the full LangGraph run (fan-out, reflect, route, rewrite when chosen, SQLite checkpoints)
   with the confidence-baseline policy and alignment-vote rewrite, so the ratio measures the graph's
   own overhead; the learned reflector's extra scoring pass is measured by ``benchmarks/reflector.py``.

Printed and written to ``benchmarks/RESULTS.md`` (and ``results/overhead.json``):

- overhead ratio = agent wall time / direct-parallel wall time (1.0 = the graph costs nothing);
- parallel-perception ratio = the agent's perception wall time / its slowest tool's time, per
  utterance (1.0 = perfectly parallel, 2.0 = as if sequential with two equal tools);
- WER (Whisper English normaliser, corpus level) of internal top-1, external top-1 and the agent.

Run: ``.venv/bin/python benchmarks/overhead.py [--limit N] [--cpu-threads T]``.
All ratios come from one run on one machine; absolute seconds depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from _common import load_dev
from rich.console import Console
from rich.progress import track
from rich.table import Table

from speech_hands import AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni
from speech_hands.backends.faster_whisper import FasterWhisperASR
from speech_hands.metrics.wer import corpus_wer
from speech_hands.reflection.confidence import ConfidencePolicy
from speech_hands.reflection.rewrite import AlignmentVotingRewriter

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="shared data folder (default: found beside the checkout)"
    )
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--cpu-threads", type=int, default=0, help="ctranslate2 threads per model (0: its default)")
    parser.add_argument("--n-best", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    console = Console()

    audios, refs = load_dev(args.data, args.limit)
    audio_s = sum(a.ref.duration_s for a in audios)

    base = FasterWhisperASR(model="bundled:base", name="whisper-base", cpu_threads=args.cpu_threads)
    tiny = FasterWhisperASR(model="bundled:tiny.en", name="whisper-tiny.en", cpu_threads=args.cpu_threads)
    for model in (base, tiny):  # load + warm up outside every timed loop
        model.transcribe(audios[0], n_best=args.n_best)

    started = time.perf_counter()
    for audio in track(audios, description="direct, sequential", console=console):
        base.transcribe(audio, n_best=args.n_best)
        tiny.transcribe(audio, n_best=args.n_best)
    sequential_s = time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        for audio in track(audios, description="direct, parallel", console=console):
            futures = [pool.submit(m.transcribe, audio, args.n_best) for m in (base, tiny)]
            for future in futures:
                future.result()
    parallel_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        omni = ComposedOmni(base, ConfidencePolicy(), AlignmentVotingRewriter(), n_best=args.n_best)
        config = AgentConfig(trace_db=str(Path(tmp) / "bench.sqlite"), n_best=args.n_best)
        agent = SpeechHands(omni, [tiny], config=config)
        agent.invoke(audios[0])  # warm the graph, normaliser and SQLite
        results = []
        perception_ratios = []
        started = time.perf_counter()
        for audio in track(audios, description="agent", console=console):
            result = agent.invoke(audio)
            results.append(result)
            perceive = [t for t in result.timings if t.node == "perceive"]
            span = max(t.started_at + t.elapsed_s for t in perceive) - min(t.started_at for t in perceive)
            perception_ratios.append(span / max(c.elapsed_s for c in result.candidates))
        agent_s = time.perf_counter() - started
        agent.close()

    internal = [r.internal.top.text if r.internal and r.internal.top else "" for r in results]
    external = [r.externals[0].top.text if r.externals and r.externals[0].top else "" for r in results]
    answers = [r.answer for r in results]
    actions = {
        a: sum(1 for r in results if r.action and r.action.value == a) for a in ("internal", "external", "rewrite")
    }
    figures = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "utterances": len(audios),
        "audio_s": round(audio_s, 1),
        "cpu_threads": args.cpu_threads,
        "n_best": args.n_best,
        "direct_sequential_s": round(sequential_s, 2),
        "direct_parallel_s": round(parallel_s, 2),
        "agent_s": round(agent_s, 2),
        "overhead_ratio_vs_parallel": round(agent_s / parallel_s, 3),
        "overhead_ratio_vs_sequential": round(agent_s / sequential_s, 3),
        "parallel_speedup_direct": round(sequential_s / parallel_s, 3),
        "parallel_perception_ratio_mean": round(statistics.mean(perception_ratios), 3),
        "parallel_perception_ratio_median": round(statistics.median(perception_ratios), 3),
        "agent_rtf": round(agent_s / audio_s, 4),
        "wer_internal_base": round(100 * corpus_wer(refs, internal).wer, 2),
        "wer_external_tiny_en": round(100 * corpus_wer(refs, external).wer, 2),
        "wer_agent": round(100 * corpus_wer(refs, answers).wer, 2),
        "actions": actions,
    }

    table = Table(title="Agent overhead (one run)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, str(value))
    console.print(table)

    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "overhead.json").write_text(json.dumps(figures, indent=2) + "\n")
    write_markdown(args.out, figures)
    console.print(f"written to {args.out} and {results_dir / 'overhead.json'}")


def write_markdown(path: Path, f: dict) -> None:
    """Replace the overhead section of RESULTS.md, keeping any other sections."""
    section = f"""<!-- overhead:start -->
## Agent overhead (`benchmarks/overhead.py`)

{f["date"]}, {f["machine"]}, {f["utterances"]} LibriSpeech test-other utterances ({f["audio_s"]} s of audio),
faster-whisper int8, {f["n_best"]}-best, cpu_threads={f["cpu_threads"]}.

| run | wall time (s) |
|---|---|
| direct, sequential (base then tiny.en) | {f["direct_sequential_s"]} |
| direct, parallel (two threads) | {f["direct_parallel_s"]} |
| agent (LangGraph, SQLite checkpoints; confidence baseline + alignment-vote rewrite) | {f["agent_s"]} |

| ratio | value |
|---|---|
| overhead = agent / direct parallel | {f["overhead_ratio_vs_parallel"]} |
| agent / direct sequential | {f["overhead_ratio_vs_sequential"]} |
| direct sequential / direct parallel | {f["parallel_speedup_direct"]} |
| parallel perception = perception wall / slowest tool (mean, median) | {f["parallel_perception_ratio_mean"]}, {f["parallel_perception_ratio_median"]} |
| agent real-time factor (s per s of audio) | {f["agent_rtf"]} |

WER (Whisper English normaliser, corpus level): internal (base) {f["wer_internal_base"]} %, external
(tiny.en) top-1 {f["wer_external_tiny_en"]} %, agent (confidence baseline) {f["wer_agent"]} %; actions {f["actions"]}.
<!-- overhead:end -->
"""
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmark results\n\nEach section is written by its script; ratios come from one run.\n\n"
    )
    if "<!-- overhead:start -->" in text:
        head, rest = text.split("<!-- overhead:start -->", 1)
        tail = rest.split("<!-- overhead:end -->", 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
