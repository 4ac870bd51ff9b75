"""The files of a report folder: ``report.json``, ``report.md``, ``items.csv`` and the PNG plots.

The one place that touches the disk: it builds the report (:mod:`~speech_hands.evals.report.build`),
adds the run's settings from ``run.json``, and hands the report to the renderers
(:mod:`~speech_hands.evals.report.markdown`, :mod:`~speech_hands.evals.report.plots`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from speech_hands.evals.report.build import build_report
from speech_hands.evals.report.markdown import render_markdown
from speech_hands.evals.report.model import EvalReport
from speech_hands.evals.report.plots import write_plots
from speech_hands.evals.routing import analyse_routing
from speech_hands.evals.runner import ItemResult
from speech_hands.metrics.labels import GoldLabel, LabelRule
from speech_hands.metrics.wer import Unit, word_errors
from speech_hands.text import NormalizerName

__all__ = ["write_report", "write_utterance_csv"]


def write_utterance_csv(
    results: Sequence[ItemResult],
    labels: Sequence[GoldLabel | None],
    path: Path,
    *,
    normalizer: NormalizerName,
    unit: Unit,
) -> None:
    """Write ``items.csv``: one row per item with every candidate, the actions (first, final, gold),
    the action probabilities and, for ASR, each candidate's WER (``labels``: gold labels in item order)."""
    fields = [
        "id",
        "dataset",
        "speaker",
        "category",
        "reference",
        "internal",
        "external_top1",
        "rewrite_candidate",
        "prediction",
        "action",
        "first_action",
        "gold_action",
        "p_internal",
        "p_external",
        "p_rewrite",
        "wer_internal",
        "wer_external_top1",
        "wer_rewrite",
        "wer_prediction",
        "error",
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r, label in zip(results, labels):
            ext = r.externals[0] if r.externals else None
            row = {
                "id": r.id,
                "dataset": r.dataset,
                "speaker": r.speaker,
                "category": r.category,
                "reference": r.reference if r.task == "asr" else r.answer,
                "internal": r.top(r.internal),
                "external_top1": r.top(ext),
                "rewrite_candidate": r.rewrite_candidate,
                "prediction": r.prediction,
                "action": r.action.value if r.action else "",
                "first_action": r.first_action.value if r.first_action else "",
                "gold_action": label.action.value if label else "",
                "error": r.error or "",
            }
            if r.probs:
                row.update({f"p_{a.value}": round(p, 4) for a, p in r.probs.items()})
            if r.task == "asr" and r.reference is not None:

                def w(text: str | None, reference: str = r.reference) -> str:
                    if text is None:
                        return ""
                    return f"{word_errors(reference, text, normalizer=normalizer, unit=unit).wer:.4f}"

                row.update(
                    {
                        "wer_internal": w(r.top(r.internal)),
                        "wer_external_top1": w(r.top(ext)),
                        "wer_rewrite": w(r.rewrite_candidate),
                        "wer_prediction": w(r.prediction),
                    }
                )
            writer.writerow(row)


def write_report(
    results: Sequence[ItemResult],
    out_dir: str | Path,
    *,
    name: str = "eval",
    normalizer: NormalizerName = "english",
    unit: Unit = "word",
    rule: LabelRule | None = None,
    plots: bool = True,
) -> EvalReport:
    """Write ``report.json``, ``report.md``, ``items.csv`` and the PNG plots into ``out_dir`` (the
    settings of the run that made the results, ``run.json`` in ``out_dir``, go into the report)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rule = rule or LabelRule(normalizer=normalizer, unit=unit)
    routing, labels = analyse_routing(results, rule)
    report = build_report(results, name=name, normalizer=normalizer, unit=unit, rule=rule, routing=routing)
    run_file = out / "run.json"
    if run_file.exists():
        report.run_settings = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
    written: list[str] = []
    if plots:
        written = write_plots(report, out)
    (out / "report.json").write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report, written), encoding="utf-8")
    write_utterance_csv(results, labels, out / "items.csv", normalizer=normalizer, unit=unit)
    return report
