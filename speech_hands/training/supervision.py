"""Supervision for the reflector from scored items (``speech-hands labels``).

From :class:`~speech_hands.evals.runner.ItemResult` records (an ``eval run`` over a manifest with
references, the internal prediction and the external N-best, run live or replayed) this writes:

- ``labels.jsonl``: per item the gold action, the evidence (error counts / WERs of internal, best
  external, rewrite), and which external candidate was best;
- ``internal.jsonl`` / ``external.jsonl`` / ``rewrite.jsonl``: the paper's three label files, the items
  of each gold action;
- ``sft.jsonl``: supervised fine-tuning records: the reflection prompt from :mod:`speech_hands.prompts`
  (external candidates, then the model's own first pass) and the target = action token + text.

SFT target text (docs/method.md section 3): by default the GOLD text for every action (``target="gold"``),
so the model learns to correct, not to copy; ``target="source"`` writes the routed text instead (own
prediction for ``<internal>``, the best external candidate for ``<external>``, gold for
``<rewrite>``). ASR targets have no space after the token, AudioQA targets one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from speech_hands.evals.routing import gold_label
from speech_hands.evals.runner import ItemResult
from speech_hands.metrics.labels import GoldLabel, LabelRule
from speech_hands.prompts import asr_reflection_prompt, audioqa_reflection_prompt, sft_target
from speech_hands.types import Action

__all__ = ["LabelledItem", "SFTRecord", "build_supervision", "write_supervision"]


class LabelledItem(BaseModel):
    """One line of ``labels.jsonl``: what the reflection saw, the gold text and the gold action."""

    id: str
    task: str
    dataset: str
    speaker: str | None = None
    audio: str | None = Field(default=None, description="audio path, when the item had audio")
    question: str | None = Field(default=None, description="AudioQA: the question stem")
    choices: list[str] = Field(default_factory=list, description="AudioQA: the options, 'A. ...'")
    gold: str
    internal: str
    externals: dict[str, list[str]]
    rewrite: str | None = None
    label: GoldLabel

    def reflection_prompt(self, n_best: int | None = None) -> str:
        """The reflection prompt for this item (:mod:`speech_hands.prompts`), with at most ``n_best``
        hypotheses of each external tool (None: all)."""
        if self.task == "qa":
            first_external = next((hyps[0] for hyps in self.externals.values() if hyps), "")
            return audioqa_reflection_prompt(self.question or "", self.choices, first_external, self.internal)
        hypotheses = [h for hyps in self.externals.values() for h in hyps[:n_best]]
        return asr_reflection_prompt(self.internal, hypotheses)

    def target_text(self, target: Literal["gold", "source"] = "gold") -> str:
        """The text after the action token: the gold text, or (``source``) the routed one."""
        if target == "source" and self.label.action is Action.INTERNAL:
            return self.internal
        if target == "source" and self.label.action is Action.EXTERNAL and self.label.external_text is not None:
            return self.label.external_text
        return self.gold

    def sft_target(self, target: Literal["gold", "source"] = "gold") -> str:
        """Action token + text (docs/method.md section 3)."""
        return sft_target(self.label.action, self.target_text(target), task=self.task)


class SFTRecord(BaseModel):
    id: str
    task: str
    audio: str | None
    prompt: str
    target: str
    action: Action


def build_supervision(
    results: Sequence[ItemResult],
    rule: LabelRule,
    *,
    target: Literal["gold", "source"] = "gold",
    audio_paths: dict[str, str] | None = None,
) -> tuple[list[LabelledItem], list[SFTRecord], int]:
    """Labelled items and SFT records; the int counts items without a label (failed / no candidate)."""
    items: list[LabelledItem] = []
    records: list[SFTRecord] = []
    unlabelled = 0
    for r in results:
        label = gold_label(r, rule)
        if label is None:
            unlabelled += 1
            continue
        gold = (r.reference if r.task == "asr" else r.answer) or ""
        item = LabelledItem(
            id=r.id,
            task=r.task,
            dataset=r.dataset,
            speaker=r.speaker,
            audio=(audio_paths or {}).get(r.id, r.audio),
            question=r.question,
            choices=r.choices,
            gold=gold,
            internal=r.top(r.internal),
            externals={o.tool: [h.text for h in o.hypotheses] for o in r.externals if o.ok},
            rewrite=r.rewrite_candidate,
            label=label,
        )
        items.append(item)
        records.append(
            SFTRecord(
                id=r.id,
                task=r.task,
                audio=item.audio,
                prompt=item.reflection_prompt(),
                target=item.sft_target(target),
                action=label.action,
            )
        )
    return items, records, unlabelled


def write_supervision(
    results: Sequence[ItemResult],
    out_dir: str | Path,
    rule: LabelRule,
    *,
    target: Literal["gold", "source"] = "gold",
    audio_paths: dict[str, str] | None = None,
) -> dict[str, int]:
    """Write the label files; returns the count per gold action (plus ``unlabelled``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, records, unlabelled = build_supervision(results, rule, target=target, audio_paths=audio_paths)

    def dump(name: str, rows: Sequence[BaseModel]) -> None:
        with (out / name).open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(row.model_dump_json() + "\n")

    dump("labels.jsonl", items)
    for action in Action:
        dump(f"{action.value}.jsonl", [i for i in items if i.label.action is action])
    dump("sft.jsonl", records)
    counts = Counter(i.label.action.value for i in items)
    summary = {a.value: counts.get(a.value, 0) for a in Action} | {"unlabelled": unlabelled}
    (out / "summary.json").write_text(
        json.dumps({"rule": rule.describe(), "target": target, "counts": summary}, indent=2) + "\n"
    )
    return summary
