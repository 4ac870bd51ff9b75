"""Leave-one-speaker-out cross-validation of the fine-tuned action-token Whisper (docs/reflector.md).

Input: an ``export-sft`` folder whose ``train.jsonl`` holds every labelled utterance (export with the
default ``--test-speakers 0``). For each held-out speaker this writes a fold folder (the other
speakers' records as ``train.jsonl``, the speaker's as ``test.jsonl``), runs ``finetune`` on it, and
pools the held-out decisions: corpus WER of the routed answers (internal text, the tool's top-1, or
the model's own rewrite), internal / external alone, the oracle of the two, per-action F1 and the
action accuracy. Writes ``--report`` (JSON) and prints a summary.

    .venv/bin/python benchmarks/finetune_cv.py --data sft/ --work /tmp/cv --report reports/finetune_cv.json \\
        [--model bundled:base] [--epochs 3] [--lr 1e-5] [--speakers 1688,1998]

``--model bundled:qwen2.5-0.5b --lora`` cross-validates the text reflector LLM the same way
(:mod:`speech_hands.training.finetune_llm`; ``--max-steps`` bounds each fold's run).

Every training run is CPU-heavy: run it under ``flock /tmp/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from speech_hands.metrics.wer import word_errors
from speech_hands.training.export import ExportRecord, oversample
from speech_hands.training.finetune import FinetuneSettings, action_scores, finetune, read_records
from speech_hands.training.finetune_llm import finetune_llm, is_llm_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--report", type=Path, default=Path("reports/finetune_cv.json"))
    parser.add_argument("--model", default="bundled:base")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=None, help="stop each fold's run after this many steps")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--action-weight", type=float, default=1.0)
    parser.add_argument("--context", default="externals")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--speakers", default=None, help="comma-separated held-out speakers (default: all)")
    parser.add_argument("--oversample", type=float, default=None, help="oversample rare actions in each fold's train")
    args = parser.parse_args()

    text_llm = is_llm_spec(args.model)  # the text reflector LLM (bundled:qwen2.5-0.5b): no audio needed
    records = read_records(args.data / "train.jsonl", need_audio=not text_llm)
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for record in {r.id: r for r in records}.values():  # an oversampled export: each item once
        by_speaker[record.speaker or record.id].append(record.model_dump_json())
    speakers = args.speakers.split(",") if args.speakers else sorted(by_speaker)
    settings = FinetuneSettings(
        model=args.model,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        batch_size=args.batch_size,
        action_weight=args.action_weight,
        context=args.context,
        lora=args.lora,
    )
    export = (args.data / "export.json").read_text() if (args.data / "export.json").is_file() else "{}"
    folds, items = {}, []
    for speaker in speakers:
        fold = args.work / f"fold-{speaker}"
        (fold / "sft").mkdir(parents=True, exist_ok=True)
        train = [line for s, group in by_speaker.items() if s != speaker for line in group]
        if args.oversample is not None:  # inside the fold: the held-out speaker never counts
            kept = oversample([ExportRecord.model_validate_json(x) for x in train], args.oversample, seed=0)
            train = [r.model_dump_json() for r in kept]
        (fold / "sft" / "train.jsonl").write_text("\n".join(train) + "\n", encoding="utf-8")
        (fold / "sft" / "test.jsonl").write_text("\n".join(by_speaker[speaker]) + "\n", encoding="utf-8")
        (fold / "sft" / "export.json").write_text(export, encoding="utf-8")
        started = time.perf_counter()
        if text_llm:
            metrics = finetune_llm(fold / "sft", fold / "ckpt", settings, fresh=True, evaluate_train=False)
        else:
            metrics = finetune(fold / "sft", fold / "ckpt", settings, fresh=True)
        held = metrics["held_out"]
        folds[speaker] = {
            "seconds": time.perf_counter() - started,
            "steps": metrics["steps"],
            "step_time_s": metrics["step_time_s"],
            "loss_first_last": [metrics["curve"]["loss"][0], metrics["curve"]["loss"][-1]],
            "accuracy": held["accuracy"],
            "wer": held.get("wer"),
        }
        gold = {r.id: r.gold for r in records}
        for item in held["predictions"]:
            items.append(item | {"speaker": speaker, "reference": gold[item["id"]]})
        print(f"{speaker}: {folds[speaker]}", flush=True)

    errors = {k: 0 for k in ("answer", "internal", "external", "oracle")}
    words = 0
    for item in items:
        counts = {k: word_errors(item["reference"], item[k]) for k in ("answer", "internal", "external")}
        for k, c in counts.items():
            errors[k] += c.errors
        errors["oracle"] += min(counts["internal"].errors, counts["external"].errors)
        words += counts["internal"].reference_length
    scores = action_scores([i["gold"] for i in items], [i["predicted"] for i in items])
    summary = {
        "settings": settings.model_dump() | {"learning_rate": settings.learning_rate, "oversample": args.oversample},
        "items": len(items),
        "reference_words": words,
        "wer": {
            f"routed (fine-tuned {'text reflector LLM' if text_llm else 'action-token Whisper'})": 100
            * errors["answer"]
            / words,
            "internal alone": 100 * errors["internal"] / words,
            "external top-1 alone": 100 * errors["external"] / words,
            "oracle of internal / external": 100 * errors["oracle"] / words,
        },
        "actions": {k: v for k, v in scores.items()},
        "predicted": {a: sum(i["predicted"] == a for i in items) for a in ("internal", "external", "rewrite")},
        "folds": folds,
        "predictions": items,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: summary[k] for k in ("items", "reference_words", "wer", "predicted")}, indent=1))
    print({a: round(v["f1"], 3) for a, v in scores["per_action"].items()}, "accuracy", round(scores["accuracy"], 3))


if __name__ == "__main__":
    main()
