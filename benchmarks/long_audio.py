"""Long audio: WER, real-time factor and peak memory of the default agent and of Whisper base alone.

The inputs are real speech: the 60 LibriSpeech dev utterances concatenated in order, their
references joined (``dev``: all 60 once, 7.6 minutes), and the first utterances of that list, or the
list repeated, to reach 1, 10, 30 or 60 minutes (whole utterances, so a little under: 60 minutes stays
within the default ``max_audio_s`` of one hour). Each repetition is
scaled by a slightly different gain (1 - 0.001 k), so no cache keyed by samples can recognise a
segment it saw in an earlier repetition.

Three systems, each run in a fresh subprocess per input so its peak resident memory (``ru_maxrss``,
models included) is its own:

- ``agent``: ``SpeechHands.default()`` on the file (long audio is routed segment by segment);
- ``agent-full``: the same with the full reflector artifact (``reflector-v1.json``: the scoring pass
  under both Whisper models and the prompted re-decode);
- ``base``: faster-whisper's own long-form transcription with Whisper base, ``WhisperModel.transcribe(
  path, beam_size=5, language="en")`` (30 s windows with timestamps, conditioned on the previous text).

Reported per input: WER (Whisper English normaliser), the longest run of consecutive reference words
left out (a lost sentence shows up there), the real-time factor (seconds of compute per second of
audio, model loading excluded), the peak RSS, and for the agent the segments and their actions.

Run: ``.venv/bin/python benchmarks/long_audio.py [--minutes dev 1 10 30 60] [--systems agent agent-full base]``
(wrap it in ``flock /tmp/bench.lock`` on a shared machine). Rows go to ``benchmarks/results/long_audio.json``,
merged with the rows already there (a run replaces the rows of its inputs and systems), and the
table of all rows to ``benchmarks/RESULTS.md`` between the ``long_audio`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).parent
SAMPLE_RATE = 16_000


def build_input(audios: list[np.ndarray], refs: list[str], minutes: str) -> tuple[np.ndarray, str]:
    """The concatenation for ``minutes`` ("dev": every utterance once) and its reference."""
    if minutes == "dev":
        return np.concatenate(audios), " ".join(refs)
    target = float(minutes) * 60 * SAMPLE_RATE
    pieces, words, total, k = [], [], 0, 0
    while True:
        i = k % len(audios)
        if pieces and total + audios[i].size > target:
            break
        gain = 1.0 - 0.001 * (k // len(audios))
        pieces.append(audios[i] * np.float32(gain))
        words.append(refs[i])
        total += audios[i].size
        k += 1
    return np.concatenate(pieces), " ".join(words)


def worker(system: str, path: str) -> None:
    """Run one system on one file in this process; print one JSON line."""
    if system in ("agent", "agent-full"):
        from speech_hands import SpeechHands
        from speech_hands.reflection.learned.policy import DEFAULT_ARTIFACT, SHIPPED_DIR

        options = {"reflector": SHIPPED_DIR / DEFAULT_ARTIFACT} if system == "agent-full" else {}
        with tempfile.TemporaryDirectory() as tmp:
            agent = SpeechHands.default(trace_db=str(Path(tmp) / "traces.sqlite"), **options).load()
            started = time.perf_counter()
            result = agent.invoke(path)
            elapsed = time.perf_counter() - started
            out = {
                "text": result.answer,
                "segments": len(result.segments),
                "segment_s_max": max(s.duration for s in result.segments),
                "actions": dict(Counter(s.action.value if s.action else "skipped" for s in result.segments)),
                "notes": len(result.notes),
                "policies": sorted({s.reflection.policy for s in result.segments if s.reflection}),
                "scoring_pass": bool(getattr(getattr(agent.omni, "rewriter", None), "scorers", None)),
            }
            agent.close()
    else:
        from faster_whisper import WhisperModel

        from speech_hands.backends.weights import resolve_model

        model = WhisperModel(resolve_model("bundled:base"), device="cpu", compute_type="int8")
        started = time.perf_counter()
        segments, _ = model.transcribe(path, beam_size=5, language="en")
        text = " ".join(s.text.strip() for s in segments)
        elapsed = time.perf_counter() - started
        out = {"text": text}
    out |= {"elapsed_s": elapsed, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    print(json.dumps(out), flush=True)


def run_one(system: str, path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", system, str(path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{system} on {path} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--data", type=Path, default=None, help="shared data folder (default: found beside the checkout)"
    )
    parser.add_argument("--minutes", nargs="+", default=["dev", "1", "10", "30", "60"], help='"dev" and/or minutes')
    parser.add_argument("--systems", nargs="+", default=["agent", "base"], choices=["agent", "agent-full", "base"])
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "long_audio.json")
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    from _common import load_dev
    from rich.console import Console

    from speech_hands.metrics.wer import longest_deletion_run, word_errors

    console = Console()
    audios, refs = load_dev(args.data, None)
    samples = [a.samples for a in audios]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            x, reference = build_input(samples, refs, minutes)
            path = Path(tmp) / f"long-{minutes}.wav"
            sf.write(str(path), x, SAMPLE_RATE, subtype="FLOAT")
            duration = x.size / SAMPLE_RATE
            del x
            for system in args.systems:
                console.print(f"{system} on {minutes} ({duration / 60:.1f} min) ...")
                out = run_one(system, path)
                hypothesis = out.pop("text")
                counts = word_errors(reference, hypothesis)
                row = {
                    "input": minutes,
                    "duration_s": round(duration, 1),
                    "system": system,
                    "wer_pct": round(100 * counts.wer, 2),
                    "substitutions": counts.substitutions,
                    "deletions": counts.deletions,
                    "insertions": counts.insertions,
                    "reference_words": counts.reference_length,
                    "longest_deletion_run": longest_deletion_run(reference, hypothesis),
                    "rtf": round(out["elapsed_s"] / duration, 4),
                    "date": date.today().isoformat(),
                    **out,
                }
                rows.append(row)
                console.print(row)
                _write(args, rows)  # after every row: a later failure keeps what was measured


def _dates(rows: list[dict]) -> str:
    days = sorted({r.get("date", "") for r in rows} - {""})
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}" if days else date.today().isoformat()


def _minutes(row: dict) -> float:
    return row["duration_s"]


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.json.read_text(encoding="utf-8")) if args.json.exists() else []
    fresh = {(r["input"], r["system"]) for r in rows}
    order = {"agent": 0, "agent-full": 1, "base": 2}
    rows = sorted(
        [*(r for r in old if (r["input"], r["system"]) not in fresh), *rows],
        key=lambda r: (_minutes(r), order[r["system"]]),
    )
    args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    name = {
        "agent": "default agent (`SpeechHands.default()`)",
        "agent-full": "agent, full reflector (scoring pass)",
        "base": "faster-whisper base alone",
    }
    lines = [
        "<!-- long_audio:start -->",
        "## Long audio (`benchmarks/long_audio.py`)",
        "",
        f"{_dates(rows)}, {platform.machine()}, {os.cpu_count()} cores, faster-whisper int8. Inputs: the 60",
        "LibriSpeech dev utterances concatenated (`dev`: each once; longer: repeated with a tiny gain change),",
        'references joined. "base alone" is faster-whisper\'s own long-form `transcribe` (beam 5). Each run is',
        "a fresh process; peak RSS includes the models. RTF: seconds of compute per second of audio.",
        "",
        "| input | audio (min) | system | WER (%) | S / D / I | longest deleted run (words) | RTF | peak RSS (GB) | segments: actions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        actions = ", ".join(f"{k} {v}" for k, v in sorted(r.get("actions", {}).items()))
        seg = f"{r['segments']}: {actions}" if "segments" in r else "-"
        lines.append(
            f"| {r['input']} | {r['duration_s'] / 60:.1f} | {name[r['system']]} | {r['wer_pct']:.2f} | "
            f"{r['substitutions']} / {r['deletions']} / {r['insertions']} | {r['longest_deletion_run']} | "
            f"{r['rtf']:.3f} | {r['peak_rss_gb']:.2f} | {seg} |"
        )
    scoring = {r["system"]: r.get("scoring_pass") for r in rows if r["system"] != "base"}
    if "agent" in scoring:
        kind = "the scoring pass under both models" if scoring["agent"] else "the N-best posterior, no scoring pass"
        lines += ["", f"The default agent's reflector in these runs: {kind}."]
    lines.append("<!-- long_audio:end -->")
    section = "\n".join(lines)
    text = args.out.read_text(encoding="utf-8") if args.out.exists() else "# Benchmark results\n"
    pattern = re.compile(r"<!-- long_audio:start -->.*?<!-- long_audio:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n" + section + "\n"
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
