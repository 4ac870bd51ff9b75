"""Does the voice assistant's ASR prompt (earlier turns -> Whisper's initial prompt) lower the WER?

Conversations built from the LibriSpeech dev utterances: each chapter (one speaker reading on) is one
conversation of its utterances in order, so every turn continues the text of the turns before it. The
default assistant (``VoiceAssistant.default()``: the default agent, no chat model) plays every
conversation twice, once with ``asr_context=False`` and once with ``asr_context=True`` (the prompt:
the last ``PROMPT_WORDS`` words of the assistant's OWN earlier transcripts, never the references), the
two settings alternating conversation by conversation. Reported: corpus WER (Whisper English
normaliser) of the assistant's answer and of each tool's top-1 (read back from each turn's routing
trace), with and without the prompt, over the turns that have an earlier turn (turn 1 of every
conversation gets no prompt in either setting) and over all turns, and the wall time of each setting.

Run: ``flock /tmp/bench.lock .venv/bin/python benchmarks/asr_prompt.py [--limit-conversations N]``;
the figures go to ``benchmarks/RESULTS.md`` between the ``asr_prompt`` markers and to
``benchmarks/results/asr_prompt.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

from speech_hands.agent.assistant import VoiceAssistant
from speech_hands.datasets.builtin import librispeech_dev
from speech_hands.graphs.assistant import PROMPT_WORDS
from speech_hands.metrics.wer import corpus_wer

HERE = Path(__file__).resolve().parent


def conversations(data: Path | None, limit: int | None) -> list[list[tuple[Path, str, str]]]:
    """(audio path, utterance id, reference) per turn, one list per chapter, in utterance order."""
    manifest = librispeech_dev(data)
    chapters: dict[str, list[tuple[Path, str, str]]] = defaultdict(list)
    for item in manifest:
        chapter = "-".join(item.id.split("-")[:2])
        chapters[chapter].append((manifest.audio_path(item), item.id, item.reference or ""))
    ordered = [sorted(turns, key=lambda t: t[1]) for _, turns in sorted(chapters.items())]
    return ordered[:limit] if limit else ordered


def play(assistant: VoiceAssistant, conversation: list[tuple[Path, str, str]]) -> list[dict]:
    """Every turn of one conversation on one thread: the answer, each tool's top-1, the prompt given."""
    thread = assistant.new_thread()
    rows = []
    for path, uid, reference in conversation:
        turn = assistant.turn(path, thread_id=thread)
        trace = assistant.trace(thread, turn.index)
        tools = {}
        if trace.result is not None:
            tools = {o.tool: (o.top.text if o.top is not None else "") for o in trace.result.candidates}
        rows.append(
            {
                "id": uid,
                "turn": turn.index,
                "reference": reference,
                "answer": turn.transcript,
                "action": turn.action.value if turn.action else None,
                "tools": tools,
                "prompt_words": len((turn.asr_prompt or "").split()),
            }
        )
    return rows


def wer_pct(rows: list[dict], pick) -> float:
    counts = corpus_wer([r["reference"] for r in rows], [pick(r) for r in rows])
    return round(100 * counts.wer, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder")
    parser.add_argument("--limit-conversations", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "asr_prompt.json")
    args = parser.parse_args()

    convs = conversations(args.data, args.limit_conversations)
    rows: dict[str, list[dict]] = {"off": [], "on": []}
    seconds = {"off": 0.0, "on": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        assistants = {
            "off": VoiceAssistant.default(trace_db=str(Path(tmp) / "off.sqlite"), asr_context=False),
            "on": VoiceAssistant.default(trace_db=str(Path(tmp) / "on.sqlite"), asr_context=True),
        }
        for a in assistants.values():
            a.agent.load()
        for i, conv in enumerate(convs):
            for setting in ("off", "on") if i % 2 == 0 else ("on", "off"):
                started = time.perf_counter()
                rows[setting] += play(assistants[setting], conv)
                seconds[setting] += time.perf_counter() - started
                print(f"conversation {i + 1}/{len(convs)} ({conv[0][1]}...), prompt {setting}: done", flush=True)
        for a in assistants.values():
            a.close()

    tools = sorted({t for r in rows["off"] for t in r["tools"]})
    summary = {"conversations": len(convs), "turns": len(rows["off"]), "prompt_words": PROMPT_WORDS, "settings": {}}
    for setting, found in rows.items():
        later = [r for r in found if r["turn"] > 1]
        summary["settings"][setting] = {
            "seconds": round(seconds[setting], 1),
            "answer_wer_later": wer_pct(later, lambda r: r["answer"]),
            "answer_wer_all": wer_pct(found, lambda r: r["answer"]),
            "tools_wer_later": {t: wer_pct(later, lambda r, t=t: r["tools"].get(t, "")) for t in tools},
            "mean_prompt_words": round(sum(r["prompt_words"] for r in later) / max(len(later), 1), 1),
        }
    for setting, s in summary["settings"].items():
        print(setting, json.dumps(s))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    _write_section(args.out, summary, tools)


def _write_section(out: Path, summary: dict, tools: list[str]) -> None:
    off, on = summary["settings"]["off"], summary["settings"]["on"]
    lines = [
        "<!-- asr_prompt:start -->",
        "## ASR prompt from earlier turns (`benchmarks/asr_prompt.py`)",
        "",
        f"{date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, one run. "
        f"{summary['conversations']} conversations (one LibriSpeech dev chapter each, its utterances in order:",
        f"{summary['turns']} turns), played by `VoiceAssistant.default()` without and with `asr_context` (the last",
        f"{summary['prompt_words']} words of its own earlier transcripts as Whisper's prompt, to both Whisper models).",
        'WER: corpus, Whisper English normaliser; "later turns" leaves out each conversation\'s first turn, which',
        "gets no prompt either way.",
        "",
        "| setting | answer WER, later turns (%) | answer WER, all turns (%) | "
        + " | ".join(f"{t} top-1, later turns (%)" for t in tools)
        + " | mean prompt (words) | wall (s) |",
        "|---|---|---|" + "---|" * len(tools) + "---|---|",
    ]
    for name, s in (("no prompt", off), ("prompt from earlier turns", on)):
        cells = " | ".join(f"{s['tools_wer_later'][t]:.2f}" for t in tools)
        lines.append(
            f"| {name} | {s['answer_wer_later']:.2f} | {s['answer_wer_all']:.2f} | {cells} | "
            f"{s['mean_prompt_words']} | {s['seconds']} |"
        )
    better = on["answer_wer_later"] < off["answer_wer_later"]
    lines += [
        "",
        f"Default: `asr_context={better}` ({'the prompt lowered' if better else 'the prompt did not lower'} the "
        "answer's WER on the later turns).",
        "<!-- asr_prompt:end -->",
    ]
    section = "\n".join(lines)
    text = out.read_text(encoding="utf-8") if out.exists() else "# Benchmark results\n"
    pattern = re.compile(r"<!-- asr_prompt:start -->.*?<!-- asr_prompt:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
