"""Evaluation manifests: one JSONL line per item, audio paths relative to the manifest's root.

A line::

    {"id": "1688-142285-0000", "audio": "1688/1688-142285-0000.flac",
     "reference": "there's iron they say ...", "dataset": "librispeech", "split": "test-other",
     "speaker": "1688", "systems": {"b1.rnnt_baseline": "their zyon they say ..."}}

AudioQA items carry ``question``, ``choices`` (``["A. ...", "B. ..."]``) and ``answer`` (one of
the choices) instead of ``reference``; ``category`` groups them in reports (DCASE 2025: bio-acoustic,
soundscape, complex QA). ``systems`` holds outputs recorded from other systems (compared in reports,
replayable as a pool). ``audio`` may be omitted for text-only items (routing over recorded outputs).

The root is the manifest file's folder unless given. Audio paths must stay inside the root: absolute
paths and paths that escape it (``../``, or a link pointing out) are rejected with the line number,
so a manifest from elsewhere cannot make the harness read arbitrary files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from speech_hands.errors import ConfigurationError

__all__ = ["Manifest", "ManifestItem"]


class ManifestItem(BaseModel):
    """One evaluation item (ASR or multiple-choice AudioQA)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    audio: str | None = Field(default=None, description="path relative to the manifest root")
    reference: str | None = Field(default=None, description="ASR: the reference transcript")
    question: str | None = None
    choices: list[str] = Field(default_factory=list)
    answer: str | None = Field(default=None, description="AudioQA: the gold option")
    dataset: str = "default"
    split: str | None = None
    category: str | None = None
    speaker: str | None = None
    language: str | None = None
    systems: dict[str, str] = Field(default_factory=dict, description="recorded outputs of other systems")

    @model_validator(mode="after")
    def _has_gold(self) -> ManifestItem:
        if self.reference is None and self.answer is None:
            raise ValueError("an item needs a reference (ASR) or an answer (AudioQA)")
        if self.answer is not None and self.choices and self.answer not in self.choices:
            raise ValueError(f"answer {self.answer!r} is not one of the choices")
        return self

    @property
    def task(self) -> Literal["asr", "qa"]:
        return "qa" if self.answer is not None else "asr"


class Manifest:
    """Items plus the root their audio paths are relative to."""

    def __init__(self, items: Iterable[ManifestItem], root: str | Path, *, name: str = "manifest") -> None:
        self.items = list(items)
        self.root = Path(root).expanduser().resolve()
        self.name = name
        seen: set[str] = set()
        for item in self.items:
            if item.id in seen:
                raise ConfigurationError(f"{name}: item id {item.id!r} appears twice")
            seen.add(item.id)
            if item.audio is not None:
                self.audio_path(item)  # fail at load time, not halfway through a run

    # ------------------------------------------------------------------ io

    @classmethod
    def load(cls, path: str | Path, root: str | Path | None = None) -> Manifest:
        """Read a JSONL manifest; errors name the file and line."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"manifest not found: {path}")
        items = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    items.append(ManifestItem.model_validate_json(line))
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first.get("loc", ())) or "line"
                    raise ConfigurationError(f"{path}:{lineno}: bad manifest item ({where}: {first['msg']})") from exc
        try:
            return cls(items, root if root is not None else path.parent, name=str(path))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc} (manifest {path})") from exc

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for item in self.items:
                fh.write(item.model_dump_json(exclude_defaults=True) + "\n")
        return path

    # ------------------------------------------------------------------ access

    def audio_path(self, item: ManifestItem) -> Path:
        """The item's audio file, checked to lie inside the root."""
        if item.audio is None:
            raise ConfigurationError(f"item {item.id!r} has no audio")
        rel = Path(item.audio)
        if rel.is_absolute():
            raise ConfigurationError(
                f"item {item.id!r}: audio path {item.audio!r} is absolute; manifest paths are relative to the root {self.root}"
            )
        resolved = (self.root / rel).resolve()
        if not resolved.is_relative_to(self.root):
            raise ConfigurationError(
                f"item {item.id!r}: audio path {item.audio!r} escapes the manifest root {self.root}"
            )
        return resolved

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ManifestItem]:
        return iter(self.items)

    def select(self, ids: Sequence[str] | None = None, limit: int | None = None) -> Manifest:
        items = [i for i in self.items if ids is None or i.id in set(ids)][:limit]
        return Manifest(items, self.root, name=self.name)

    @property
    def task(self) -> Literal["asr", "qa"]:
        tasks = {i.task for i in self.items}
        if len(tasks) > 1:
            raise ConfigurationError(f"{self.name} mixes ASR and AudioQA items; evaluate them separately")
        return tasks.pop() if tasks else "asr"

    @property
    def system_names(self) -> list[str]:
        names: dict[str, None] = {}
        for item in self.items:
            names.update(dict.fromkeys(item.systems))
        return list(names)
