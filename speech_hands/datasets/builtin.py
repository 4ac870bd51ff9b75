"""Manifests for the datasets this project ships or reads, and the paper's N-best files.

Built-in names (``speech-hands eval run NAME``), read from the shared data folder
(``$SPEECH_HANDS_SHARED_DATA``, else ``../shared/data`` from the working directory):

- ``librispeech-dev``: 60 real LibriSpeech test-other utterances (6 speakers x 10) with the outputs
  of 7 recorded ASR systems per utterance as ``systems``.
- ``librispeech-test-other-text``: ~2,900 test-other references with 3 recorded systems, text only
  (route over recorded systems with ``--internal-system`` / ``--external-system``).
- ``fsdd``: Free Spoken Digit Dataset, official test split (recordings 0-4 of each digit and
  speaker), 8 kHz; the reference is the digit's English word (Whisper's normaliser maps it to "7").
- ``fsdd-train``: the rest of FSDD (recordings 5-49: 2,700 items, the same 6 speakers), e.g. to
  train a reflector (``train-reflector --data fsdd-train``) and test it on ``fsdd``.
- ``esc10``: ESC-10 environmental sounds as a 10-way multiple-choice AudioQA set ("Which sound is
  in the recording?"), category = the true class.

``paper_nbest_records`` reads the paper's ``{dataset}_{split}_{asr}_5_best.jsonl`` files (lines
``{"audio": ..., "gold": ..., "<asr>_nbest": [...]}``) into manifest items plus replay records.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from speech_hands.backends.replay import RecordedHypothesis, ReplayRecord, ReplayStore
from speech_hands.datasets.manifest import Manifest, ManifestItem
from speech_hands.errors import ConfigurationError

__all__ = ["BUILTIN", "paper_nbest_records", "replay_from_systems", "resolve_manifest", "shared_data_dir"]

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def shared_data_dir() -> Path:
    """Where the shared datasets live: ``$SPEECH_HANDS_SHARED_DATA``, else the first ``shared/data``
    folder beside the working directory or the source checkout, or beside one of their parents (a
    clone at ``work/main`` or ``work/ci/clone`` both find ``work/shared/data``), else beside the
    checkout a local clone was made from (``git clone . /tmp/x`` still finds the data)."""
    if env := os.environ.get("SPEECH_HANDS_SHARED_DATA"):
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    starts = [Path.cwd().resolve(), checkout]
    if (origin := _local_origin(checkout)) is not None:
        starts.append(origin)
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder.parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
    raise ConfigurationError(
        "shared data folder not found; set SPEECH_HANDS_SHARED_DATA to the folder holding librispeech_other_dev/ etc."
    )


def _local_origin(checkout: Path) -> Path | None:
    """The folder this checkout was cloned from, when that is a local path (else None)."""
    import subprocess

    try:
        url = subprocess.run(
            ["git", "-C", str(checkout), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(url.removeprefix("file://")).expanduser() if url and "://" not in url.removeprefix("file://") else None
    return path.resolve() if path is not None and path.is_dir() else None


def _folder(root: Path | None, name: str) -> Path:
    folder = (root or shared_data_dir()) / name
    if not folder.is_dir():
        raise ConfigurationError(f"dataset folder not found: {folder}")
    return folder


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def librispeech_dev(root: Path | None = None) -> Manifest:
    folder = _folder(root, "librispeech_other_dev")
    systems: dict[str, dict[str, str]] = {}
    for row in _tsv(folder / "asr_hypotheses.tsv"):
        systems.setdefault(row["utt_id"], {})[row["system"]] = row["hypothesis"]
    items = [
        ManifestItem(
            id=row["utt_id"],
            audio=row["audio"],
            reference=row["text"],
            dataset="librispeech",
            split="test-other",
            speaker=row["speaker"],
            language="en",
            systems=systems.get(row["utt_id"], {}),
        )
        for row in _tsv(folder / "transcripts.tsv")
    ]
    return Manifest(items, folder, name="librispeech-dev")


def librispeech_test_other_text(root: Path | None = None) -> Manifest:
    folder = _folder(root, "librispeech_test_other_text")
    refs: dict[str, str] = {}
    with (folder / "test-other.ref.tsv").open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                refs[parts[0]] = parts[1]
    systems: dict[str, dict[str, str]] = {}
    for hyp_file in sorted(folder.glob("test-other.hyp.*.tsv")):
        name = hyp_file.name.removeprefix("test-other.hyp.").removesuffix(".tsv")
        with hyp_file.open(encoding="utf-8") as fh:
            for line in fh:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 1 and parts[0]:
                    systems.setdefault(parts[0], {})[name] = parts[1] if len(parts) > 1 else ""
    items = [
        ManifestItem(
            id=uid,
            reference=text,
            dataset="librispeech-text",
            split="test-other",
            speaker=uid.split("-")[0],
            language="en",
            systems=systems.get(uid, {}),
        )
        for uid, text in sorted(refs.items())
    ]
    return Manifest(items, folder, name="librispeech-test-other-text")


def fsdd(root: Path | None = None, split: str = "test") -> Manifest:
    folder = _folder(root, "fsdd")
    pattern = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
    items = []
    for path in sorted((folder / "recordings").iterdir()):
        m = pattern.match(path.name)
        if not m:
            continue
        digit, speaker, index = int(m.group(1)), m.group(2), int(m.group(3))
        in_test = index <= 4
        if (split == "test") != in_test and split != "all":
            continue
        items.append(
            ManifestItem(
                id=path.stem,
                audio=f"recordings/{path.name}",
                reference=DIGITS[digit],
                dataset="fsdd",
                split="test" if in_test else "train",
                speaker=speaker,
                language="en",
            )
        )
    return Manifest(items, folder, name=f"fsdd-{split}")


ESC10_QUESTION = "Which sound can be heard in the recording?"


def esc10(root: Path | None = None) -> Manifest:
    folder = _folder(root, "esc10")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    labels = [c.split(" - ", 1)[-1] for c in classes]
    choices = [f"{chr(ord('A') + i)}. {label}" for i, label in enumerate(labels)]
    items = []
    for cls, label, choice in zip(classes, labels, choices):
        for path in sorted((folder / cls).glob("*.ogg")):
            items.append(
                ManifestItem(
                    id=path.stem,
                    audio=f"{cls}/{path.name}",
                    question=ESC10_QUESTION,
                    choices=choices,
                    answer=choice,
                    dataset="esc10",
                    category=label,
                    split=path.stem.split("-")[0],  # the ESC fold
                )
            )
    return Manifest(items, folder, name="esc10")


BUILTIN: dict[str, Callable[..., Manifest]] = {
    "librispeech-dev": librispeech_dev,
    "librispeech-test-other-text": librispeech_test_other_text,
    "fsdd": fsdd,
    "fsdd-train": lambda root=None: fsdd(root, split="train"),
    "esc10": esc10,
}


def resolve_manifest(spec: str | Path, root: str | Path | None = None, *, data_dir: Path | None = None) -> Manifest:
    """A built-in dataset name, or a JSONL manifest path (with an optional root)."""
    if isinstance(spec, str) and spec in BUILTIN:
        return BUILTIN[spec](data_dir)
    path = Path(spec)
    if not path.exists() and isinstance(spec, str) and "/" not in spec and not spec.endswith(".jsonl"):
        raise ConfigurationError(f"unknown dataset {spec!r}; built-in: {', '.join(BUILTIN)}, or a manifest .jsonl path")
    return Manifest.load(path, root)


def paper_nbest_records(
    path: str | Path,
    *,
    root: str | Path,
    asr: str | None = None,
    dataset: str | None = None,
    internal: dict[str, str] | None = None,
) -> tuple[Manifest, list[ReplayRecord]]:
    """Read a paper-style N-best file into a manifest (audio relative to ``root``) and replay records.

    The ASR name comes from the ``<asr>_nbest`` key (or ``asr``); item ids are the audio file stems;
    ``internal`` optionally maps ids to the omni model's own predictions (recorded separately in the
    paper's layout)."""
    path = Path(path)
    root = Path(root).expanduser().resolve()
    name = dataset or re.sub(r"_5_best$|_1_best$", "", path.stem)
    items: list[ManifestItem] = []
    records: list[ReplayRecord] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            keys = [k for k in row if k.endswith("_nbest")]
            if asr is None and len(keys) != 1:
                raise ConfigurationError(f"{path}:{lineno}: expected one '<asr>_nbest' key, found {keys}")
            tool = asr or keys[0].removesuffix("_nbest")
            hypotheses = row.get(f"{tool}_nbest")
            if hypotheses is None:
                raise ConfigurationError(f"{path}:{lineno}: no '{tool}_nbest' list")
            hypotheses = hypotheses if isinstance(hypotheses, list) else [hypotheses]
            audio = Path(row["audio"])
            rel = audio.resolve().relative_to(root) if audio.is_absolute() else audio
            uid = audio.stem
            items.append(ManifestItem(id=uid, audio=str(rel), reference=row.get("gold", ""), dataset=name))
            record_internal = [RecordedHypothesis(text=internal[uid])] if internal and uid in internal else []
            records.append(
                ReplayRecord(
                    id=uid, internal=record_internal, external={tool: [RecordedHypothesis(text=h) for h in hypotheses]}
                )
            )
    return Manifest(items, root, name=name), records


def replay_from_systems(manifest: Manifest, internal: str, externals: list[str]) -> ReplayStore:
    """Route over recorded systems: ``internal`` plays the omni model's first pass, each of
    ``externals`` an external tool (1-best each). Items missing a system raise with the id."""

    missing = [n for n in [internal, *externals] if n not in manifest.system_names]
    if missing:
        raise ConfigurationError(
            f"{manifest.name} has no recorded system(s) {missing}; recorded: {', '.join(manifest.system_names) or 'none'}"
        )
    records = []
    for item in manifest:
        absent = [n for n in [internal, *externals] if n not in item.systems]
        if absent:
            raise ConfigurationError(f"{manifest.name}: item {item.id!r} has no output of {absent}")
        records.append(
            ReplayRecord(
                id=item.id,
                internal=[RecordedHypothesis(text=item.systems[internal])],
                external={n: [RecordedHypothesis(text=item.systems[n])] for n in externals},
            )
        )
    return ReplayStore(records)
