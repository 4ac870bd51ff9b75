"""What the agent costs next to Whisper base alone, and what it buys: a WER / real-time-factor Pareto table.

One run on the LibriSpeech dev utterances (or ``--limit N`` of them), every configuration on every
utterance, **interleaved**: for each utterance the configurations run one after the other (the order
rotating from one utterance to the next), each with empty encoder-state and scoring caches. A load
change on the machine then hits every configuration alike, and the ratios to base come from the same
minutes. The configurations:

- **base alone**: ``FasterWhisperASR.transcribe`` with Whisper base, 5-best, beam 5, CTranslate2's
  default threads (the reference; on 2 cores as fast as 2 threads, and faster than 1);
- **perception only**: base and tiny.en 5-best in two threads, called directly, each with the
  agent's share of the cores (the floor any agent with both tools pays);
- **agent, confidence baseline**: ``SpeechHands.default(policy="confidence")`` (the default before
  the learned reflector);
- **agent, fast (default)**: ``SpeechHands.default()``: the learned reflector with the posterior from the
  tools' own N-best scores, no scoring pass (``reflector-fast-v1.json``);
- **agent, fast, CTranslate2's default threads**: the same with ``cpu_threads=0`` for base and tiny.en
  (the default until this table: two OpenMP teams of CTranslate2's default size contend for the cores;
  the default ``"auto"`` gives each model an even share instead);
- **agent, full + gate**: the scoring-pass artifact, its pass skipped when the tools agree (``gate = 3``);
- **agent, full**: ``SpeechHands.default(reflector="full")``: prompted re-decode, every candidate scored
  under both Whisper models (``reflector-v1.json``; the default until this table).

Columns: wall time, RTF (processing seconds per audio second), RTFx (the Open ASR leaderboard's
inverse: total audio seconds / total processing seconds), the ratio to base alone, WER on these
utterances in this run (in-sample for the learned artifacts: they were trained on them), and with
``--records`` the leave-one-speaker-out CV WER of each decision on the recipe's cached records
(``speech-hands train-reflector --work-dir DIR`` writes ``DIR/records.jsonl``), computed here by the
recipe's code. Pareto: no other row has both a lower CV WER (else WER) and a lower RTF.

Run: ``flock /tmp/bench.lock .venv/bin/python benchmarks/cost.py [--records R] [--limit N]``; results go
to ``benchmarks/RESULTS.md`` between the ``cost`` markers and to ``benchmarks/results/cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from _common import load_dev
from rich.console import Console
from rich.progress import track
from rich.table import Table

from speech_hands import SpeechHands
from speech_hands.audio import AudioInput
from speech_hands.backends.faster_whisper import FasterWhisperASR, threads_per_model
from speech_hands.metrics.wer import corpus_wer

HERE = Path(__file__).parent
EMBEDDED_PREDICTOR = {"kind": "faster-whisper", "model": "bundled:base", "cpu_threads": "auto"}
EXTERNAL = [{"kind": "faster-whisper", "model": "bundled:tiny.en", "cpu_threads": "auto"}]


@dataclass
class Run:
    name: str
    call: Callable[[AudioInput], tuple[str, str | None, list]]  #: audio -> (answer, action, node timings)
    agent: SpeechHands | None = None
    seconds: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    actions: list[str | None] = field(default_factory=list)
    nodes: list[dict[str, float]] = field(default_factory=list)


def _agent_call(agent: SpeechHands) -> Callable[[AudioInput], tuple[str, str | None, list]]:
    def call(audio: AudioInput) -> tuple[str, str | None, list]:
        result = agent.invoke(audio)
        gated = result.reflection is not None and "scoring pass skipped" in (result.reflection.rationale or "")
        action = result.action.value if result.action else None
        return result.answer, f"{action} (gated)" if gated else action, list(result.timings)

    return call


def _clear(agent: SpeechHands | None) -> None:
    """Forget every cached analysis and score, so each configuration pays for its own pass."""
    if agent is None:
        return
    for part in (getattr(agent.omni, "policy", None), getattr(agent.omni, "rewriter", None)):
        rewriter = getattr(part, "rewriter", part)
        if hasattr(rewriter, "_cache"):
            rewriter._cache.clear()
        for scorer in getattr(rewriter, "scorers", {}).values():
            scorer._cache.clear()


def node_split(timings: list) -> dict[str, float]:
    """Seconds per node kind; the parallel perceive branches count as their wall-clock span."""
    out: dict[str, float] = {}
    perceive = [t for t in timings if t.node == "perceive"]
    if perceive:
        out["perceive"] = max(t.started_at + t.elapsed_s for t in perceive) - min(t.started_at for t in perceive)
    for t in timings:
        if t.node != "perceive":
            out[t.node] = out.get(t.node, 0.0) + t.elapsed_s
    return out


def cv_wers(records_path: Path) -> dict[str, float]:
    """Leave-one-speaker-out CV WER of each decision, by the recipe's own code, on cached records."""
    from speech_hands.reflection.learned.features import tools_agree
    from speech_hands.text import normalize_english
    from speech_hands.training.cross_validation import cross_validate
    from speech_hands.training.fitting import word_errors
    from speech_hands.training.recipe import Recipe
    from speech_hands.training.records import load_records

    records = [r for r in load_records(records_path) if r.item.real]
    recipe = Recipe()
    agent = "agent (learned reflector)"
    full = cross_validate(records, recipe, prompted=True, mode="mbr", policy="risk")
    fast = cross_validate(records, recipe, prompted=False, mode="mbr", policy="risk", posterior="nbest")
    by_id = {r.item.id: r for r in records}
    gated_errors = words = 0
    for u in full.per_utterance:
        rec = by_id[u["id"]]
        errors, n = word_errors(rec.item.reference, rec.internal.top.text if rec.internal.top else "")
        gated = tools_agree(rec.internal, rec.externals, normalize_english, 3)
        gated_errors += errors if gated else u["agent_errors"]
        words += n
    return {
        "base alone": full.systems["internal (whisper-base)"].wer,
        "perception only": full.systems["internal (whisper-base)"].wer,
        "agent, confidence baseline": full.systems["agent (confidence baseline + alignment vote)"].wer,
        "agent, fast (default)": fast.systems[agent].wer,
        "agent, fast, CTranslate2's default threads": fast.systems[agent].wer,
        "agent, full + gate": 100.0 * gated_errors / max(1, words),
        "agent, full": full.systems[agent].wer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (default: beside the checkout)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--records", type=Path, default=None, help="the recipe's records.jsonl, for the CV column")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    console = Console()

    audios, refs = load_dev(args.data, args.limit)
    audio_s = sum(a.ref.duration_s for a in audios)
    share = threads_per_model(2)  # what the default agent gives each of its two models
    base = FasterWhisperASR(model="bundled:base", name="whisper-base", cpu_threads=0)
    base_shared = FasterWhisperASR(model="bundled:base", name="whisper-base", cpu_threads=share)
    tiny_shared = FasterWhisperASR(model="bundled:tiny.en", name="whisper-tiny.en", cpu_threads=share)
    tiny = FasterWhisperASR(model="bundled:tiny.en", name="whisper-tiny.en", cpu_threads=0)  # the old default's
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="perceive")

    def base_alone(audio: AudioInput) -> tuple[str, str | None, list]:
        return base.transcribe(audio, n_best=5)[0].text, None, []

    def perception(audio: AudioInput) -> tuple[str, str | None, list]:
        futures = [pool.submit(m.transcribe, audio, 5) for m in (base_shared, tiny_shared)]
        outputs = [future.result() for future in futures]
        return outputs[0][0].text, None, []

    with tempfile.TemporaryDirectory() as tmp:

        def db(name: str) -> str:
            return str(Path(tmp) / f"{name}.sqlite")

        gated = SpeechHands.from_config(
            {
                "agent": {"trace_db": db("gate")},
                "omni": {"kind": "embedded", "reflector": "full", "gate": 3, "predictor": EMBEDDED_PREDICTOR},
                "external": EXTERNAL,
                "preload": False,
            }
        )
        agents = {
            "agent, confidence baseline": SpeechHands.default(policy="confidence", trace_db=db("confidence")),
            "agent, fast (default)": SpeechHands.default(trace_db=db("fast")),
            "agent, fast, CTranslate2's default threads": SpeechHands.default(cpu_threads=0, trace_db=db("fast0")),
            "agent, full + gate": gated,
            "agent, full": SpeechHands.default(reflector="full", trace_db=db("full")),
        }
        runs = [Run("base alone", base_alone), Run("perception only", perception)]
        runs += [Run(name, _agent_call(agent), agent) for name, agent in agents.items()]
        for run in runs:  # load + warm up every model and graph, outside the timed loop
            run.call(audios[0])
        for k, audio in enumerate(track(audios, description="every configuration, interleaved", console=console)):
            for run in runs[k % len(runs) :] + runs[: k % len(runs)]:
                for model in (base, tiny, base_shared, tiny_shared):
                    model.encoder_cache.clear()
                _clear(run.agent)
                started = time.perf_counter()
                answer, action, timings = run.call(audio)
                run.seconds.append(time.perf_counter() - started)
                run.answers.append(answer)
                run.actions.append(action)
                run.nodes.append(node_split(timings))
        for agent in agents.values():
            agent.close()
    pool.shutdown()

    cv = cv_wers(args.records) if args.records else {}
    base_s = sum(runs[0].seconds)
    rows = []
    for run in runs:
        wall = sum(run.seconds)
        per_item = [s / b for s, b in zip(run.seconds, runs[0].seconds)]
        rows.append(
            {
                "config": run.name,
                "wall_s": round(wall, 2),
                "rtf": round(wall / audio_s, 4),
                "rtfx": round(audio_s / wall, 2),
                "x_base": round(wall / base_s, 3),
                "x_base_median_per_utterance": round(statistics.median(per_item), 3),
                "wer": round(100 * corpus_wer(refs, run.answers).wer, 2),
                "cv_wer": round(cv[run.name], 2) if run.name in cv else None,
                "actions": dict(Counter(a.removesuffix(" (gated)") for a in run.actions if a)),
                "gated": sum(1 for a in run.actions if a and a.endswith("(gated)")),
                "per_utterance_s": {
                    node: round(statistics.mean(n.get(node, 0.0) for n in run.nodes), 3)
                    for node in sorted({k for n in run.nodes for k in n})
                },
            }
        )
    key = "cv_wer" if cv else "wer"
    for row in rows:
        row["pareto"] = not any(
            o[key] <= row[key] and o["rtf"] <= row["rtf"] and (o[key], o["rtf"]) != (row[key], row["rtf"]) for o in rows
        )
    figures = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} ({platform.processor() or 'cpu'}), {os.cpu_count()} cores",
        "threads_per_model": share,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "utterances": len(audios),
        "audio_s": round(audio_s, 1),
        "records": str(args.records) if args.records else None,
        "rows": rows,
        # the thread count must not change the N-best lists, hence the decisions (the CV row assumes so)
        "fast_thread_settings_answers_differing": sum(
            a != b for a, b in zip(*(r.answers for r in runs if r.name.startswith("agent, fast")))
        ),
        # the gate's live effect with the shipped full artifact: utterances gated, answers changed by it
        "full_gated": next(r["gated"] for r in rows if r["config"] == "agent, full + gate"),
        "full_gate_answers_differing": sum(
            a != b for a, b in zip(*(r.answers for r in runs if r.name.startswith("agent, full")))
        ),
    }
    table = Table(title=f"cost and accuracy, one interleaved run ({len(audios)} utterances, {audio_s:.1f} s of audio)")
    for column in ("config", "wall s", "RTF", "RTFx", "x base", "WER %", "CV WER %", "Pareto"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for r in rows:
        table.add_row(
            r["config"],
            f"{r['wall_s']:.2f}",
            f"{r['rtf']:.4f}",
            f"{r['rtfx']:.2f}",
            f"{r['x_base']:.3f}",
            f"{r['wer']:.2f}",
            _cv_text(r),
            "yes" if r["pareto"] else "",
        )
    console.print(table)
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "cost.json").write_text(json.dumps(figures, indent=2) + "\n")
    write_markdown(args.out, figures)
    console.print(f"written to {args.out} and {results_dir / 'cost.json'}")


def _cv_text(row: dict) -> str:
    return "-" if row["cv_wer"] is None else f"{row['cv_wer']:.2f}"


def write_markdown(path: Path, f: dict) -> None:
    """Replace the cost section of RESULTS.md, keeping every other section."""
    rows = "\n".join(
        f"| {r['config']} | {r['wall_s']:.2f} | {r['rtf']:.4f} | {r['rtfx']:.2f} | **{r['x_base']:.2f}** "
        f"({r['x_base_median_per_utterance']:.2f}) | {r['wer']:.2f} | "
        f"{_cv_text(r)} | "
        f"{'yes' if r['pareto'] else ''} |"
        for r in f["rows"]
    )
    agent_rows = [r for r in f["rows"] if r["config"].startswith("agent")]
    nodes = sorted({n for r in agent_rows for n in r["per_utterance_s"]})
    profile = "\n".join(
        f"| {r['config']} | " + " | ".join(f"{r['per_utterance_s'].get(n, 0.0):.3f}" for n in nodes) + " |"
        for r in agent_rows
    )
    actions = "; ".join(f"{r['config']}: {r['actions']}" for r in agent_rows)
    section = f"""<!-- cost:start -->
## Cost and accuracy: the Pareto table (`benchmarks/cost.py`)

{f["date"]}, {f["machine"]}, {f["utterances"]} LibriSpeech test-other utterances ({f["audio_s"]} s of audio),
faster-whisper int8, 5-best (beam 5) for both tools; the agents and "perception only" give each model
{f["threads_per_model"]} CTranslate2 thread(s) (the default `cpu_threads="auto"`: an even share of the cores), "base
alone" runs with CTranslate2's default. One run: every configuration on every utterance, interleaved
(rotating order, caches emptied before each call), so the ratios come from the same minutes; load
average at the end {f["load_average_at_end"]}.

| configuration | wall (s) | RTF | RTFx | x base (median per utterance) | WER % (this run) | CV WER % | Pareto |
|---|---|---|---|---|---|---|---|
{rows}

RTF = processing seconds / audio seconds; RTFx = total audio seconds / total processing seconds (the
Open ASR leaderboard's definition). WER in this run is in-sample for the learned artifacts (trained on
these utterances). CV WER: leave-one-speaker-out cross-validation of each decision on the recipe's
cached records of these 60 utterances (`--records`: `speech-hands train-reflector --work-dir DIR` writes
`DIR/records.jsonl`), by the recipe's code; "full +
gate" = the full agent's held-out answers with the internal top-1 wherever the gate holds. Pareto: no
other row has both a lower CV WER and a lower RTF.

Where an agent's time goes (mean seconds per utterance, per graph node; perceive = the wall-clock span of
the parallel branches):

| configuration | {" | ".join(nodes)} |
|---|{"---|" * len(nodes)}
{profile}

Actions: {actions}. Answers of the fast agent with CTranslate2's default threads that differ from the
default's: {f["fast_thread_settings_answers_differing"]} of {f["utterances"]}. The gate skipped the full artifact's scoring pass on
{f["full_gated"]} utterances; answers of "full + gate" that differ from "full": {f["full_gate_answers_differing"]}.
<!-- cost:end -->"""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(r"<!-- cost:start -->.*?<!-- cost:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
