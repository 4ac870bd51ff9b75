"""Replay backends: serve recorded predictions instead of running models.

The paper's scripts route over precomputed outputs (an omni model's first pass and an ASR N-best
saved as JSONL). Replay makes the same possible here, and makes routing experiments over thousands of
utterances cost nothing but the policy. One JSONL record per utterance::

    {"id": "533-131564-0011", "question": null,
     "internal": [{"text": "now don t force him ...", "score": -0.21}],
     "external": {"parakeet": [{"text": "Now, don't burst into a tempest at that.", "score": null},
                               "Now, don't force into a tempest at Ted."]}}

A hypothesis is ``{"text", "score"}`` or a bare string; lists are best first. Records are looked up
by the input's ``AudioRef.id`` (the file stem unless given), so replay also works with no audio at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from speech_hands.audio import AudioInput
from speech_hands.errors import ConfigurationError, ToolFailure
from speech_hands.types import Hypothesis

INTERNAL = "internal"


class RecordedHypothesis(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str
    score: float | None = None


RawHypothesis = str | RecordedHypothesis


def _coerce(items: Iterable[RawHypothesis | Mapping]) -> list[RecordedHypothesis]:
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(RecordedHypothesis(text=item))
        elif isinstance(item, RecordedHypothesis):
            out.append(item)
        else:
            out.append(RecordedHypothesis.model_validate(item))
    return out


class ReplayRecord(BaseModel):
    """Recorded tool outputs for one utterance."""

    model_config = ConfigDict(extra="ignore")

    id: str
    question: str | None = None
    internal: list[RecordedHypothesis] = Field(default_factory=list)
    external: dict[str, list[RecordedHypothesis]] = Field(default_factory=dict)

    @field_validator("internal", mode="before")
    @classmethod
    def _internal(cls, value: object) -> object:
        if isinstance(value, str):
            return [RecordedHypothesis(text=value)]
        return _coerce(value) if isinstance(value, list) else value

    @field_validator("external", mode="before")
    @classmethod
    def _external(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return {k: _coerce([v] if isinstance(v, str) else v) for k, v in value.items()}
        return value


class ReplayStore:
    """Recorded outputs keyed by utterance id (loaded once, shared by every replay backend)."""

    def __init__(self, records: Iterable[ReplayRecord]) -> None:
        self._records: dict[str, ReplayRecord] = {}
        for record in records:
            if record.id in self._records:
                raise ConfigurationError(f"replay: utterance id {record.id!r} is recorded twice")
            self._records[record.id] = record

    @classmethod
    def from_jsonl(cls, path: str | Path) -> ReplayStore:
        path = Path(path)
        if not path.exists():
            raise ConfigurationError(
                f"replay file not found: {path}. Give a JSONL file of replay records (one per utterance, "
                "format in speech_hands.backends.replay), e.g. written by ReplayStore.to_jsonl."
            )
        records = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    records.append(ReplayRecord.model_validate_json(line))
                except ValueError as exc:
                    raise ConfigurationError(f"{path}:{lineno}: not a replay record ({exc})") from exc
        return cls(records)

    def to_jsonl(self, path: str | Path) -> None:
        with Path(path).open("w", encoding="utf-8") as fh:
            for record in self._records.values():
                fh.write(record.model_dump_json(exclude_none=True) + "\n")

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, utterance_id: object) -> bool:
        return utterance_id in self._records

    @property
    def ids(self) -> list[str]:
        return list(self._records)

    @property
    def external_tools(self) -> list[str]:
        names: dict[str, None] = {}
        for record in self._records.values():
            names.update(dict.fromkeys(record.external))
        return list(names)

    def get(self, utterance_id: str) -> ReplayRecord:
        try:
            return self._records[utterance_id]
        except KeyError:
            raise ToolFailure(f"replay: no recorded output for utterance {utterance_id!r}") from None

    def hypotheses(self, utterance_id: str, tool: str, source: str) -> list[Hypothesis]:
        record = self.get(utterance_id)
        recorded = record.internal if tool == INTERNAL else record.external.get(tool)
        if recorded is None:
            raise ToolFailure(f"replay: utterance {utterance_id!r} has no output recorded for tool {tool!r}")
        return [Hypothesis(text=h.text, score=h.score, source=source, rank=i) for i, h in enumerate(recorded)]


class ReplayASR:
    """An ASR backend that returns the N-best recorded for ``tool`` (``"internal"`` = the omni model's
    own first pass)."""

    def __init__(self, store: ReplayStore, tool: str, name: str | None = None) -> None:
        self.store = store
        self.tool = tool
        self.name = name or (f"replay:{tool}")

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        """The recorded N-best list; it takes no text prompt (what was recorded does not change)."""
        return self.store.hypotheses(audio.id, self.tool, self.name)[: max(1, n_best)]


class ReplayCaption(ReplayASR):
    """A caption / AudioQA backend over recorded answers (e.g. Audio Flamingo 3's 1-best)."""

    def caption(self, audio: AudioInput, question: str | None = None) -> list[Hypothesis]:
        return self.store.hypotheses(audio.id, self.tool, self.name)


def records_from_demo_cases(path: str | Path) -> list[ReplayRecord]:
    """The paper's recorded demo cases (``speech_hands_demo_cases.json``) as replay records.

    AudioQA cases get the question with its options appended; ASR cases without an id get one from
    their benchmark name."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    records = []
    for case in data.get("audio_qa", []):
        question = case["question"] + "\n" + "\n".join(case.get("choices", []))
        records.append(
            ReplayRecord(
                id=case["id"],
                question=question,
                internal=[case["internal_prediction"]],
                external={case.get("external_model", "external"): [case["external_prediction"]]},
            )
        )
    for i, case in enumerate(data.get("asr", [])):
        records.append(
            ReplayRecord(
                id=case.get("utterance_id") or f"{case['benchmark'].lower()}-{i}",
                internal=[case["internal_prediction"]],
                external={case.get("external_model", "external"): case["external_nbest"]},
            )
        )
    return records
