"""JASCO co-reasoning evaluation ("What Are They Doing", Wang et al.): LLM judges rate how well an
audio LLM inferred what the speakers are doing from BOTH the sound and the speech.

Input: the benchmark's CSV, one row per (clip, instruction variant): ``id, audio, audio_sound,
spoken_text, prompt, audio_only_target, speech_only_target, target_keywords, tgt_text, allm_output``
(``allm_output`` is the evaluated model's answer). Each clip is asked with the 8 instruction
variants of :data:`INSTRUCTIONS`.

Each judge (any langchain-core chat model) answers two tasks in one reply: a rating 0/1/2 and an
orientation (Audio-Oriented / Speech-Oriented / Both / Neither). Scores, as in the benchmark's
tables:

- a row scores its rating only when its orientation is Both (a right answer from one modality
  is not co-reasoning), else 0;
- **best-mean**: per clip the best score over its instruction variants, averaged over clips;
- **modality dependence**: the share of Audio / Both / Speech orientations among rows oriented to
  at least one modality (Neither excluded).

Several judges are averaged. Judge replies are parsed leniently (case, markdown emphasis, line
breaks); when the orientation cannot be read, the judge is asked once to restate it (the
benchmark's post-processing step). Replies that still cannot be parsed are COUNTED per judge
(``unparseable_*``) and score 0; they are never dropped silently or filled from the reference.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from speech_hands.errors import ConfigurationError
from speech_hands.prompts import load_template

__all__ = [
    "INSTRUCTIONS",
    "JascoReport",
    "JascoRow",
    "JudgeScores",
    "JudgeVerdict",
    "judge_prompt",
    "judge_rows",
    "load_jasco_csv",
    "parse_judge_output",
    "score_verdicts",
]

#: The benchmark's 8 instruction variants (audio/speech order swapped in each pair).
INSTRUCTIONS: tuple[str, ...] = (
    "Based on both the audio sound and the spoken text, infer what the speakers are doing specifically?",
    "Based on both the spoken text and the audio sound, infer what the speakers are doing specifically?",
    "What is the spoken text? What is the audio sound? Based on both the spoken text and the audio sound, "
    "infer what the speakers are doing specifically?",
    "What is the audio sound? What is the spoken text? Based on both the audio sound and the spoken text, "
    "infer what the speakers are doing specifically?",
    "What is the spoken text? What is the audio sound? Based on both the spoken text and the audio sound, "
    "infer what specific scenario are the speakers in?",
    "What is the audio sound? What is the spoken text? Based on both the audio sound and the spoken text, "
    "infer what specific scenario are the speakers in?",
    "What sound can you hear? What does the speaker say? Guess what activity the speakers are engaged in "
    "using both the audio sound and the spoken text.",
    "What does the speaker say? What sound can you hear? Guess what activity the speakers are engaged in "
    "using both the spoken text and the audio sound.",
)

Orientation = Literal["audio", "speech", "both", "neither"]
REQUIRED_COLUMNS = (
    "id",
    "audio_sound",
    "spoken_text",
    "prompt",
    "audio_only_target",
    "speech_only_target",
    "target_keywords",
    "tgt_text",
    "allm_output",
)


class JascoRow(BaseModel):
    """One (clip, instruction) row of the benchmark CSV with the evaluated model's answer."""

    model_config = ConfigDict(extra="ignore")

    id: str
    audio: str | None = None
    audio_sound: str
    spoken_text: str
    prompt: str
    audio_only_target: str
    speech_only_target: str
    target_keywords: str
    tgt_text: str = Field(description="the reference answer")
    allm_output: str = Field(description="the evaluated model's answer")


def load_jasco_csv(path: str | Path) -> list[JascoRow]:
    """Read the benchmark CSV; a missing column is named in the error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"JASCO csv not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigurationError(f"{path}: missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
        return [JascoRow.model_validate({k: (v or "") for k, v in row.items() if k}) for row in reader]


def judge_prompt(row: JascoRow) -> str:
    """The judge's user message for one row."""
    return load_template("jasco_judge").format(
        audio_sound=row.audio_sound,
        spoken_text=row.spoken_text,
        question=row.prompt,
        audio_only_target=row.audio_only_target,
        speech_only_target=row.speech_only_target,
        reference=row.tgt_text,
        keywords=row.target_keywords,
        prediction=row.allm_output,
    )


class JudgeVerdict(BaseModel):
    """One judge's reading of one row."""

    judge: str
    rating: int | None = Field(default=None, description="0, 1 or 2; None when unparseable")
    orientation: Orientation | None = None
    reformatted: bool = Field(default=False, description="the orientation came from the restate request")
    error: str | None = Field(default=None, description="the judge call failed")
    raw: str = ""

    @property
    def score(self) -> int:
        """The row's score: the rating if oriented to Both, else 0 (unparseable -> 0, counted)."""
        return self.rating if self.rating is not None and self.orientation == "both" else 0


_MARKUP = re.compile(r"[*_`#]+")
_RATING = re.compile(r"rating\s*[:=\-]?\s*\(?\s*([012])\b", re.I)
_ORIENTATION = re.compile(r"orientation\s*[:=\-]?\s*\(?\s*([a-z][a-z\- ]*)", re.I)


def _orientation_word(text: str) -> Orientation | None:
    t = text.strip().lower()
    if t.startswith("neither"):
        return "neither"
    if t.startswith("audio"):
        return "audio"
    if t.startswith("speech"):
        return "speech"
    if t.startswith("both") or t.startswith("good"):  # "Good" is the benchmark's older name for Both
        return "both"
    return None


def parse_judge_output(text: str, judge: str = "judge") -> JudgeVerdict:
    """Read ``Rating:`` and ``Orientation:`` from a judge reply (the last occurrence of each wins)."""
    clean = _MARKUP.sub("", text or "")
    ratings = _RATING.findall(clean)
    orientations = [o for o in (_orientation_word(m) for m in _ORIENTATION.findall(clean)) if o is not None]
    return JudgeVerdict(
        judge=judge,
        rating=int(ratings[-1]) if ratings else None,
        orientation=orientations[-1] if orientations else None,
        raw=text or "",
    )


def _judge_name(model: object) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def _ask(model, prompt: str) -> str:
    from langchain_core.messages import HumanMessage, SystemMessage

    reply = model.invoke([SystemMessage(content="You are an NLP assistant"), HumanMessage(content=prompt)])
    content = getattr(reply, "content", reply)
    if isinstance(content, list):  # content blocks
        content = "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content)


def judge_rows(
    rows: Sequence[JascoRow], judges: Sequence[object], *, reformat: bool = True, show_progress: bool = True
) -> list[list[JudgeVerdict]]:
    """``verdicts[j][i]``: judge j's verdict on row i. A failing call is recorded, not raised."""
    from speech_hands.progress import progress_bar

    if not judges:
        raise ConfigurationError("give at least one judge (a langchain-core chat model)")
    verdicts: list[list[JudgeVerdict]] = []
    with progress_bar(disable=not show_progress, transient=True) as progress:
        for model in judges:
            name = _judge_name(model)
            task = progress.add_task(f"judge {name}", total=len(rows))
            mine: list[JudgeVerdict] = []
            for row in rows:
                try:
                    verdict = parse_judge_output(_ask(model, judge_prompt(row)), name)
                    if verdict.orientation is None and reformat:
                        explanation = verdict.raw.split("Explanation2:")[-1]
                        restated = _ask(model, load_template("jasco_reformat").format(explanation=explanation))
                        word = _orientation_word(_MARKUP.sub("", restated))
                        if word is not None:
                            verdict = verdict.model_copy(update={"orientation": word, "reformatted": True})
                except Exception as exc:  # counted per judge as a failed call
                    verdict = JudgeVerdict(judge=name, error=f"{type(exc).__name__}: {exc}")
                mine.append(verdict)
                progress.advance(task)
            verdicts.append(mine)
    return verdicts


class JudgeScores(BaseModel):
    judge: str
    best_mean: float
    audio_pct: float
    both_pct: float
    speech_pct: float
    neither: int
    unparseable_rating: int
    unparseable_orientation: int
    failed_calls: int
    reformatted: int


class JascoReport(BaseModel):
    rows: int
    clips: int
    judges: list[JudgeScores]
    best_mean: float = Field(description="averaged over judges")
    audio_pct: float
    both_pct: float
    speech_pct: float


def _judge_scores(rows: Sequence[JascoRow], verdicts: Sequence[JudgeVerdict]) -> JudgeScores:
    best: dict[str, int] = {}
    for row, verdict in zip(rows, verdicts):
        best[row.id] = max(best.get(row.id, 0), verdict.score)
    oriented = [v.orientation for v in verdicts if v.orientation in ("audio", "both", "speech")]
    n = len(oriented)

    def pct(kind: str) -> float:
        return 100 * oriented.count(kind) / n if n else 0.0

    return JudgeScores(
        judge=verdicts[0].judge if verdicts else "judge",
        best_mean=sum(best.values()) / len(best) if best else 0.0,
        audio_pct=pct("audio"),
        both_pct=pct("both"),
        speech_pct=pct("speech"),
        neither=sum(1 for v in verdicts if v.orientation == "neither"),
        unparseable_rating=sum(1 for v in verdicts if v.error is None and v.rating is None),
        unparseable_orientation=sum(1 for v in verdicts if v.error is None and v.orientation is None),
        failed_calls=sum(1 for v in verdicts if v.error is not None),
        reformatted=sum(1 for v in verdicts if v.reformatted),
    )


def score_verdicts(rows: Sequence[JascoRow], verdicts: Sequence[Sequence[JudgeVerdict]]) -> JascoReport:
    """Best-mean and modality dependence per judge and averaged over judges."""
    if not verdicts:
        raise ValueError("no judge verdicts")
    per_judge = [_judge_scores(rows, v) for v in verdicts]
    k = len(per_judge)
    return JascoReport(
        rows=len(rows),
        clips=len({r.id for r in rows}),
        judges=per_judge,
        best_mean=sum(j.best_mean for j in per_judge) / k,
        audio_pct=sum(j.audio_pct for j in per_judge) / k,
        both_pct=sum(j.both_pct for j in per_judge) / k,
        speech_pct=sum(j.speech_pct for j in per_judge) / k,
    )


def render_markdown(report: JascoReport) -> str:
    lines = [
        "# JASCO co-reasoning evaluation",
        "",
        f"{report.rows} rows, {report.clips} clips, {len(report.judges)} judge(s).",
        "",
        "| judge | best-mean | audio % | both % | speech % | neither | unparseable rating | unparseable orientation | failed calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for j in report.judges:
        lines.append(
            f"| {j.judge} | {j.best_mean:.2f} | {j.audio_pct:.0f} | {j.both_pct:.0f} | {j.speech_pct:.0f} | "
            f"{j.neither} | {j.unparseable_rating} | {j.unparseable_orientation} | {j.failed_calls} |"
        )
    lines.append(
        f"| **mean** | **{report.best_mean:.2f}** | {report.audio_pct:.0f} | {report.both_pct:.0f} | {report.speech_pct:.0f} | | | | |"
    )
    return "\n".join(lines) + "\n"
