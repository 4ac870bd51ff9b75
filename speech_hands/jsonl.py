"""Append-only JSONL caches: one pydantic record per line, written as each item finishes.

The evaluation runner's ``results.jsonl`` and the reflector recipe's ``records.jsonl`` are both
written this way so that an interrupted run resumes where it stopped. A process killed mid-write
leaves a half line at the end; reading skips it (that item is simply computed again) instead of
refusing the whole file, and before appending again a writer cuts that half line
(:func:`cut_partial_line`) or compacts the file (:func:`rewrite_records`), so a new record is never
glued onto it. User-written inputs (manifests, replay
files) are read strictly elsewhere: there a bad line is an error that names it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

Record = TypeVar("Record", bound=BaseModel)

log = logging.getLogger(__name__)


def read_appended(path: str | Path, model: type[Record]) -> list[Record]:
    """Every complete record in ``path`` (none if the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(model.model_validate_json(line))
            except ValidationError:  # a half-written line from an interrupted run: that item is redone
                log.warning("%s:%d: skipped an incomplete record (an interrupted write)", path, number)
    return records


def rewrite_records(path: str | Path, records: Iterable[BaseModel]) -> None:
    """Replace ``path`` with exactly ``records``, one per line, atomically (a crash leaves the old file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def cut_partial_line(path: str | Path) -> bool:
    """Truncate ``path`` after its last newline (a write interrupted mid-line); True when it cut."""
    path = Path(path)
    if not path.exists():
        return False
    with path.open("rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return False
        fh.truncate(data.rfind(b"\n") + 1)
    log.warning("%s: cut an incomplete last record (an interrupted write)", path)
    return True
