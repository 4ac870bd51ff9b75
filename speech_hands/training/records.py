"""Run the embedded pool over training utterances once and keep everything the reflector needs.

A :class:`PoolRecord` holds, for one utterance with known text: every tool's N-best (the internal
model's and each external tool's, as the agent's perception would produce them), the extra
candidates of the rewrite's generators (prompted re-decoding), the score of every candidate text
under every scorer model, and the audio statistics. Features, rescoring weights and labels are all
computed later from records, through the same functions the agent calls at inference
(:func:`speech_hands.reflection.learned.features.pool_from_outputs` and friends), so training needs no model
once the records exist.

Records are appended to a JSONL cache keyed by item id (and the pool's configuration), so an
interrupted run resumes and a rerun of the recipe costs nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from speech_hands.jsonl import cut_partial_line, read_appended
from speech_hands.reflection.learned.features import AUDIO_FEATURES, audio_statistics
from speech_hands.reflection.learned.scoring import CandidateScore
from speech_hands.training.corpus import TrainingItem
from speech_hands.types import ToolOutput


class PoolConfig(BaseModel):
    """Which models make up the pool (the shipped default: base internal, tiny.en external)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    internal: str = "bundled:base"
    internal_name: str = "whisper-base"
    externals: tuple[tuple[str, str], ...] = (("bundled:tiny.en", "whisper-tiny.en"),)
    n_best: int = 5
    prompted: bool = True

    def key(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


class PoolRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: TrainingItem
    pool_key: str
    internal: ToolOutput
    externals: list[ToolOutput]
    extra: list[ToolOutput] = Field(default_factory=list)  #: generator outputs (prompted re-decode)
    #: scorer name -> raw text -> [logprob, eot_logprob, n_tokens, min_token_logprob]
    scores: dict[str, dict[str, list[float]]]
    audio_stats: dict[str, float]

    def score_fn(self):
        """A :data:`~speech_hands.reflection.learned.features.ScoreFn` over the stored scores."""

        def fn(name: str, texts: Sequence[str]) -> list[CandidateScore] | None:
            table = self.scores.get(name)
            if table is None or any(t not in table for t in texts):
                return None
            return [
                CandidateScore(text=t, logprob=v[0], eot_logprob=v[1], n_tokens=int(v[2]), min_token_logprob=v[3])
                for t in texts
                for v in [table[t]]
            ]

        return fn


class PoolRunner:
    """Decodes and scores items with real models (loaded lazily, shared with the agent's cache)."""

    def __init__(self, config: PoolConfig | None = None) -> None:
        from speech_hands.backends.faster_whisper import FasterWhisperASR
        from speech_hands.reflection.learned.rescoring import PromptedCandidates
        from speech_hands.reflection.learned.scoring import WhisperScorer

        self.config = config or PoolConfig()
        c = self.config
        self.internal = FasterWhisperASR(model=c.internal, name=c.internal_name)
        self.externals = [FasterWhisperASR(model=spec, name=name) for spec, name in c.externals]
        self.scorers = [WhisperScorer(self.internal), *[WhisperScorer(e) for e in self.externals]]
        self.generator = PromptedCandidates(self.internal) if c.prompted else None

    def run(self, item: TrainingItem) -> PoolRecord:
        from speech_hands.audio import load_audio

        audio = load_audio(item.audio, utterance_id=item.id)
        n = self.config.n_best
        internal = ToolOutput(tool=self.internal.name, role="internal", hypotheses=self.internal.transcribe(audio, n))
        externals = [
            ToolOutput(tool=e.name, role="external", hypotheses=e.transcribe(audio, n)) for e in self.externals
        ]
        extra = []
        if self.generator is not None:
            out = self.generator.generate(audio, [internal, *externals])
            if out is not None:
                extra.append(out)
        texts = sorted({h.text for o in [internal, *externals, *extra] for h in o.hypotheses})
        scores: dict[str, dict[str, list[float]]] = {}
        for scorer in self.scorers:
            result = scorer.score(audio, texts) if texts else []
            if result is not None:
                scores[scorer.asr.name] = {
                    s.text: [s.logprob, s.eot_logprob, float(s.n_tokens), s.min_token_logprob] for s in result
                }
        return PoolRecord(
            item=item,
            pool_key=self.config.key(),
            internal=internal,
            externals=externals,
            extra=extra,
            scores=scores,
            audio_stats=audio_statistics(audio.samples),
        )


def refresh_audio_stats(record: PoolRecord) -> dict[str, float]:
    from speech_hands.audio import load_audio

    return audio_statistics(load_audio(record.item.audio).samples)


def load_records(path: Path, pool_key: str | None = None) -> list[PoolRecord]:
    """Cached records (of this pool configuration); a half-written last line is skipped and redone."""
    return [r for r in read_appended(path, PoolRecord) if pool_key is None or r.pool_key == pool_key]


def build_records(
    items: Iterable[TrainingItem],
    cache: Path,
    runner_factory: Callable[[], PoolRunner],
    config: PoolConfig,
    progress: Callable[[TrainingItem], None] | None = None,
) -> list[PoolRecord]:
    """Records of ``items``, computing (and appending to ``cache``) only the missing ones."""
    items = list(items)
    have = {r.item.id: r for r in load_records(cache, config.key())}
    runner: PoolRunner | None = None
    cache.parent.mkdir(parents=True, exist_ok=True)
    cut_partial_line(cache)  # else the next record would be glued onto a half-written one
    out = []
    with cache.open("a", encoding="utf-8") as fh:
        for item in items:
            rec = have.get(item.id)
            if rec is None or rec.item != item:
                runner = runner or runner_factory()
                rec = runner.run(item)
                fh.write(json.dumps(rec.model_dump(mode="json")) + "\n")
                fh.flush()
            elif set(rec.audio_stats) != set(AUDIO_FEATURES):  # cached under older audio features
                rec.audio_stats = refresh_audio_stats(rec)
            out.append(rec)
            if progress is not None:
                progress(item)
    return out
