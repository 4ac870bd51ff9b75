"""Append-only JSONL caches: one pydantic record per line, written as each item finishes.

The evaluation runner's ``results.jsonl`` and the reflector recipe's ``records.jsonl`` are both
written this way so that an interrupted run resumes where it stopped. A process killed mid-write
leaves a half line at the end; reading skips it (that item is simply computed again) instead of
refusing the whole file. User-written inputs (manifests, replay files) are read strictly elsewhere:
there a bad line is an error that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

Record = TypeVar("Record", bound=BaseModel)


def read_appended(path: str | Path, model: type[Record]) -> list[Record]:
    """Every complete record in ``path`` (none if the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                records.append(model.model_validate_json(line))
            except ValidationError:
                continue  # a half-written line from an interrupted run: that item is redone
    return records
