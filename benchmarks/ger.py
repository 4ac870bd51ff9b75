"""GER baseline: does an LLM rewriting from the N-best lists beat Whisper base alone? (the paper: no)

On the recipe's cached records of the 60 LibriSpeech dev utterances (both tools' 5-best lists, the
same records the CV rows of ``benchmarks/cost.py`` use; ``speech-hands train-reflector --work-dir DIR``
writes ``DIR/records.jsonl``), with the same normaliser (Whisper English, corpus WER):

- Whisper base top-1 alone, Whisper tiny.en top-1, the oracle over both 5-best lists;
- the fast default reflector, leave-one-speaker-out CV by the recipe's own code;
- **GER**: the bundled Qwen2.5-0.5B-Instruct writes the transcript from both 5-best lists
  (:class:`~speech_hands.reflection.ger.GERRewriter`, greedy), on every utterance (the cascade);
- **GER, action-token path**: :class:`~speech_hands.reflection.chat_llm.ChatLLMReflector` on the same
  model (three action tokens added, untrained) continuing after a forced ``<rewrite>``: the code path a
  fine-tuned text reflector uses for its rewrites.

Also per-utterance latency of each GER call and the peak resident memory.

Run: ``flock /tmp/bench.lock .venv-extras/bin/python benchmarks/ger.py --records DIR/records.jsonl
[--limit N]`` (needs the ``llm`` extra); results go to ``benchmarks/RESULTS.md`` between the ``ger``
markers and to ``benchmarks/results/ger.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import statistics
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.progress import track

from speech_hands.audio import virtual_audio
from speech_hands.backends.local_llm import BUNDLED_QWEN, load_chat_model
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.chat_llm import ChatLLMReflector
from speech_hands.reflection.ger import GERRewriter
from speech_hands.training.cross_validation import cross_validate
from speech_hands.training.fitting import word_errors
from speech_hands.training.recipe import Recipe
from speech_hands.training.records import load_records

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=Path, default=None, help="the recipe's records.jsonl (60 dev utterances)")
    parser.add_argument(
        "--section-only", action="store_true", help="rewrite the RESULTS.md section from results/ger.json"
    )
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-action-path", action="store_true", help="skip the ChatLLMReflector rewrite row")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    console = Console()
    if args.section_only:
        write_section(args.out, json.loads((HERE / "results" / "ger.json").read_text(encoding="utf-8")))
        return
    if args.records is None:
        parser.error("--records is required (speech-hands train-reflector --work-dir DIR writes DIR/records.jsonl)")

    records = [r for r in load_records(args.records) if r.item.real]
    fast = cross_validate(records, Recipe(), prompted=False, mode="mbr", policy="risk", posterior="nbest")
    fast_by_id = {u["id"]: u for u in fast.per_utterance}
    if args.limit:
        records = records[: args.limit]
    inputs = [
        ReflectionInput(audio=virtual_audio(r.item.id), question=None, internal=r.internal, externals=r.externals)
        for r in records
    ]
    refs = [r.item.reference for r in records]

    chat = load_chat_model(BUNDLED_QWEN, max_new_tokens=128)
    ger = GERRewriter(chat)
    rows: dict[str, list[str]] = {"ger": [], "action": []}
    seconds: dict[str, list[float]] = {"ger": [], "action": []}
    for inp in track(inputs, description="GER (Qwen 0.5B chat prompt)", console=console):
        started = time.perf_counter()
        rows["ger"].append(ger.rewrite(inp).text)
        seconds["ger"].append(time.perf_counter() - started)
    if not args.no_action_path:
        reflector = ChatLLMReflector(BUNDLED_QWEN, add_action_tokens=True, max_new_tokens=128, device="cpu")
        for inp in track(inputs, description="GER (ChatLLMReflector, forced <rewrite>)", console=console):
            started = time.perf_counter()
            rows["action"].append(reflector.rewrite(inp).text)
            seconds["action"].append(time.perf_counter() - started)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    def tally(texts: list[str]) -> tuple[int, int]:
        errors = words = 0
        for ref, text in zip(refs, texts):
            e, n = word_errors(ref, text)
            errors, words = errors + e, words + n
        return errors, words

    def top(output) -> str:
        return output.top.text if output.top is not None else ""

    systems: dict[str, tuple[int, int]] = {
        "Whisper base top-1 alone (internal)": tally([top(r.internal) for r in records]),
        "Whisper tiny.en top-1 alone (external)": tally([top(r.externals[0]) for r in records]),
        "oracle over both 5-best lists": tally(
            [
                min(
                    (h.text for o in (r.internal, *r.externals) for h in o.hypotheses),
                    key=lambda t: word_errors(ref, t)[0],
                )
                for r, ref in zip(records, refs)
            ]
        ),
    }
    fast_errors = sum(fast_by_id[r.item.id]["agent_errors"] for r in records)
    systems["fast default reflector (LOSO CV)"] = (fast_errors, systems["Whisper base top-1 alone (internal)"][1])
    systems["GER: Qwen2.5-0.5B chat prompt over both 5-best lists"] = tally(rows["ger"])
    if rows["action"]:
        systems["GER: ChatLLMReflector, forced <rewrite> (untrained token)"] = tally(rows["action"])
    base_errors = systems["Whisper base top-1 alone (internal)"][0]
    changed = sum(
        word_errors(ref, text)[0] != word_errors(ref, top(r.internal))[0]
        for ref, text, r in zip(refs, rows["ger"], records)
    )
    worse = sum(
        word_errors(ref, text)[0] > word_errors(ref, top(r.internal))[0]
        for ref, text, r in zip(refs, rows["ger"], records)
    )
    figures = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} (cpu)",
        "utterances": len(records),
        "records": str(args.records),
        "wer": {k: 100.0 * e / max(1, n) for k, (e, n) in systems.items()},
        "errors": {k: e for k, (e, _) in systems.items()},
        "reference_words": systems["Whisper base top-1 alone (internal)"][1],
        "x_base": {k: e / max(1, base_errors) for k, (e, _) in systems.items()},
        "ger_latency_s": {k: _stats(v) for k, v in seconds.items() if v},
        "ger_utterances_worse_than_base": worse,
        "ger_utterances_changed_errors": changed,
        "peak_rss_gb": round(peak_gb, 2),
        "examples": [
            {"id": r.item.id, "reference": ref, "base": top(r.internal), "ger": g}
            for r, ref, g in list(zip(records, refs, rows["ger"]))[:5]
        ],
    }
    for name, wer in figures["wer"].items():
        console.print(f"{name:60s} {wer:6.2f} %  ({figures['x_base'][name]:.3f} x base)")
    console.print(f"GER latency: {figures['ger_latency_s']}; peak RSS {peak_gb:.2f} GB")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ger.json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    write_section(args.out, figures)


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(values), 3),
        "p50": round(ordered[len(ordered) // 2], 3),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
    }


def write_section(path: Path, f: dict) -> None:
    """Replace the ger section of RESULTS.md, keeping every other section."""
    lines = "\n".join(
        f"| {name} | {wer:.2f} | {f['x_base'][name]:.3f} | {f['errors'][name]} |" for name, wer in f["wer"].items()
    )
    latency = "; ".join(
        f"{'chat prompt' if k == 'ger' else 'ChatLLMReflector'} mean {v['mean']} s, p50 {v['p50']} s, p95 {v['p95']} s"
        for k, v in f["ger_latency_s"].items()
    )
    base, ger = "Whisper base top-1 alone (internal)", "GER: Qwen2.5-0.5B chat prompt over both 5-best lists"
    holds = "holds here" if f["wer"][ger] > f["wer"][base] else "does not hold here"
    section = f"""<!-- ger:start -->
## GER baseline: an LLM rewriting from the N-best lists (`benchmarks/ger.py`)

{f["date"]}, {f["machine"]}, 2 cores, {f["utterances"]} LibriSpeech test-other utterances ({f["reference_words"]}
reference words), the recipe's cached records (both tools' 5-best lists, as `speech-hands train-reflector --work-dir DIR` writes `DIR/records.jsonl`), Whisper English
normaliser, corpus WER. GER = the bundled Qwen2.5-Coder-0.5B-Instruct (`bundled:qwen2.5-0.5b`, bf16 weights
computed in fp32, greedy) writes the transcript from both 5-best lists on every utterance (the cascade; no
decision). The fast reflector row is leave-one-speaker-out CV.

| system | WER % | x base | word errors |
|---|---|---|---|
{lines}

GER made an utterance worse than base alone on {f["ger_utterances_worse_than_base"]} of {f["utterances"]}
(changed its error count on {f["ger_utterances_changed_errors"]}). Latency per utterance: {latency}; peak RSS
{f["peak_rss_gb"]} GB (other work shared the 2 cores: latencies are upper bounds). The paper's finding (the cascaded
GER is worse than the single ASR) {holds}: GER {f["wer"][ger]:.2f} % vs base alone {f["wer"][base]:.2f} %
({f["x_base"][ger]:.2f} x), where the fast reflector, choosing among the same candidates, reaches
{f["wer"]["fast default reflector (LOSO CV)"]:.2f} %. The model is small (0.5B, not fine-tuned), so this is a
floor for GER, not the paper's 7B setting.
<!-- ger:end -->"""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(r"<!-- ger:start -->.*?<!-- ger:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
