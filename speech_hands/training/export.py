"""Fine-tuning data from gold labels (``speech-hands export-sft``): the formats trainers read as-is.

Input: the folder ``speech-hands labels`` writes (``labels.jsonl``, one
:class:`~speech_hands.training.supervision.LabelledItem` per line). Output, per split:

- ``speech_hands_sft_<split>.json``: ShareGPT records in the OpenAI-messages layout that
  LLaMA-Factory reads (``messages`` with ``role`` / ``content``, and ``audios``: the audio path,
  marked by an ``<audio>`` placeholder in the user turn), plus ``dataset_info.json`` registering
  them (``formatting: sharegpt``, the ``audios`` column, the role tags);
- ``<split>.jsonl``: the project's own format (:class:`ExportRecord`: prompt, target, action,
  speaker, audio, and what the prompt was built from: the internal text, each tool's N-best, the gold
  text), what ``speech-hands finetune`` reads;
- ``export.json``: the settings and the counts per split and action.

Options (:class:`ExportOptions`): N-best size in the prompt (the paper's 5-best, or 1), with or
without audio (the no-audio variant is the text reflector's data), a per-dataset cap (the paper
caps each dataset at 20k items), class balancing for the training split (``<rewrite>`` is under 2 %
of the paper's labels: ``oversample`` repeats minority actions up to ``max_ratio`` times, never
across splits), and a speaker-disjoint split (every utterance of a held-out speaker is in the test
split, so a score on it is a score on unseen voices). Everything is seeded: the same labels and
options give the same files.

Bad input is refused with the file and line: a line that is not a labelled item, an unknown action,
a missing audio file when audio is exported.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speech_hands.errors import ConfigurationError
from speech_hands.training.supervision import LabelledItem
from speech_hands.types import Action

AUDIO_PLACEHOLDER = "<audio>"
DATASET_PREFIX = "speech_hands_sft"


class ExportOptions(BaseModel):
    """How labelled items become fine-tuning records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_best: int = Field(default=5, ge=1, le=32, description="external hypotheses per tool in the prompt")
    audio: bool = Field(default=True, description="attach the audio (ShareGPT 'audios'); False: text only")
    target: Literal["gold", "source"] = Field(default="gold", description="text after the token (section 3)")
    balance: Literal["none", "oversample"] = Field(default="none", description="class balancing of train")
    max_ratio: float = Field(default=10.0, ge=1.0, description="oversample: at most this many copies of an item")
    cap_per_dataset: int | None = Field(default=20_000, ge=1, description="items kept per dataset (None: all)")
    test_speakers: float = Field(default=0.0, ge=0.0, lt=1.0, description="share of speakers held out as test")
    seed: int = 0


class ExportRecord(BaseModel):
    """One fine-tuning example in the project's own format."""

    id: str
    split: Literal["train", "test"]
    task: str
    dataset: str
    speaker: str | None
    audio: str | None
    prompt: str
    target: str
    action: Action
    #: what the prompt was built from (the action-token Whisper puts these into its previous-text context)
    internal: str | None = None
    externals: dict[str, list[str]] = Field(default_factory=dict, description="each tool's first n_best")
    gold: str | None = None


def read_labels(path: str | Path) -> list[LabelledItem]:
    """``labels.jsonl`` (or a folder holding it), strictly: a bad line is an error naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / "labels.jsonl"
    if not path.is_file():
        raise ConfigurationError(f"no labels at {path}; write them with `speech-hands labels RUN --out DIR`")
    items = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                items.append(LabelledItem.model_validate_json(line))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "line"
                raise ConfigurationError(
                    f"{path}:{number}: not a labelled item ({where}: {first['msg']}); "
                    "export-sft reads what `speech-hands labels` writes"
                ) from exc
    return items


def _speaker(item: LabelledItem) -> str:
    return item.speaker or item.id  # an item without a speaker is its own speaker


def split_by_speaker(items: Sequence[LabelledItem], share: float, seed: int) -> dict[str, str]:
    """Item id -> ``train`` / ``test``: ``share`` of the speakers (at least one when share > 0), with all
    their items, go to test."""
    if share <= 0:
        return {i.id: "train" for i in items}
    speakers = sorted({_speaker(i) for i in items})
    if len(speakers) < 2:
        raise ConfigurationError("a speaker-disjoint split needs items of at least two speakers")
    held = set(random.Random(seed).sample(speakers, max(1, round(share * len(speakers)))))
    return {i.id: "test" if _speaker(i) in held else "train" for i in items}


def oversample(records: list[ExportRecord], max_ratio: float, seed: int) -> list[ExportRecord]:
    """Repeat the items of minority actions towards the majority's count, each at most ``max_ratio``
    times in all; shuffled with ``seed``."""
    by_action: dict[Action, list[ExportRecord]] = defaultdict(list)
    for record in records:
        by_action[record.action].append(record)
    if not by_action:
        return []
    largest = max(len(group) for group in by_action.values())
    rng = random.Random(seed)
    out: list[ExportRecord] = []
    for group in by_action.values():
        wanted = min(largest, int(len(group) * max_ratio))
        out += [group[i % len(group)] for i in range(wanted)]
    rng.shuffle(out)
    return out


def _sharegpt(record: ExportRecord) -> dict:
    content = f"{AUDIO_PLACEHOLDER}{record.prompt}" if record.audio is not None else record.prompt
    entry: dict = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": record.target}]}
    if record.audio is not None:
        entry["audios"] = [record.audio]
    return entry


def _dataset_info(splits: Sequence[str], audio: bool) -> dict:
    columns = {"messages": "messages"} | ({"audios": "audios"} if audio else {})
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    return {
        f"{DATASET_PREFIX}_{split}": {
            "file_name": f"{DATASET_PREFIX}_{split}.json",
            "formatting": "sharegpt",
            "columns": columns,
            "tags": tags,
        }
        for split in splits
    }


def build_records(items: Sequence[LabelledItem], options: ExportOptions) -> list[ExportRecord]:
    """The records of every split, in a stable order (train balanced when asked)."""
    rng = random.Random(options.seed)
    kept: list[LabelledItem] = []
    by_dataset: dict[str, list[LabelledItem]] = defaultdict(list)
    for item in items:
        by_dataset[item.dataset].append(item)
    for dataset in sorted(by_dataset):
        group = by_dataset[dataset]
        cap = options.cap_per_dataset
        kept += group if cap is None or len(group) <= cap else rng.sample(group, cap)
    split_of = split_by_speaker(kept, options.test_speakers, options.seed)
    records = []
    for item in kept:
        audio = None
        if options.audio:
            if not item.audio:
                raise ConfigurationError(f"item {item.id!r} has no audio path; export with --no-audio")
            if not Path(item.audio).is_file():
                raise ConfigurationError(f"item {item.id!r}: audio file not found: {item.audio}")
            audio = str(Path(item.audio).resolve())
        records.append(
            ExportRecord(
                id=item.id,
                split=split_of[item.id],  # type: ignore[arg-type]
                task=item.task,
                dataset=item.dataset,
                speaker=item.speaker,
                audio=audio,
                prompt=item.reflection_prompt(options.n_best),
                target=item.sft_target(options.target),
                action=item.label.action,
                internal=item.internal,
                externals={tool: hyps[: options.n_best] for tool, hyps in item.externals.items()},
                gold=item.gold,
            )
        )
    train = [r for r in records if r.split == "train"]
    if options.balance == "oversample":
        train = oversample(train, options.max_ratio, options.seed)
    return train + [r for r in records if r.split == "test"]


def export_sft(labels: str | Path, out_dir: str | Path, options: ExportOptions | None = None) -> dict:
    """Write the fine-tuning files for ``labels`` into ``out_dir``; returns the summary (also written
    to ``export.json``)."""
    options = options or ExportOptions()
    records = build_records(read_labels(labels), options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = [s for s in ("train", "test") if any(r.split == s for r in records)]
    for split in splits:
        rows = [r for r in records if r.split == split]
        (out / f"{DATASET_PREFIX}_{split}.json").write_text(
            json.dumps([_sharegpt(r) for r in rows], ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(row.model_dump_json() + "\n")
    (out / "dataset_info.json").write_text(json.dumps(_dataset_info(splits, options.audio), indent=2) + "\n")
    summary = {
        "labels": str(labels),
        "options": options.model_dump(),
        "counts": {
            split: {
                "records": sum(r.split == split for r in records),
                "speakers": len({r.speaker or r.id for r in records if r.split == split}),
                "actions": dict(Counter(r.action.value for r in records if r.split == split)),
            }
            for split in splits
        },
    }
    (out / "export.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
