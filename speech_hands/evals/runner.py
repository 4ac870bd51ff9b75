"""Running an agent over a manifest: one :class:`ItemResult` per item, appended to a JSONL file as
soon as it is scored, so an interrupted run resumes where it stopped and nothing is lost when one
item fails (its error is recorded and counted, not raised).

What a resumed run keeps is the *prediction* of an item, keyed by its id and its audio's sha256 (the
run folder's settings are fingerprinted by the CLI): the references, questions, options and
recorded systems always come from the manifest, so a corrected reference is scored at once. Items
whose audio changed and items that failed are run again. The file is compacted before appending
(one record per item, no half-written line left from a crash).

For the gold labels, the harness also needs what the rewrite edge WOULD have produced for every
item (the paper's label rule compares against the rewrite's WER). When the agent rewrote, that is its
first rewrite; otherwise, with ``label_rewrite=True``, the agent's own rewrite strategy is called once
on the same candidates (cheap for alignment voting; costs one generation for a generative omni model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from rich.console import Console

from speech_hands.audio import sha256_file
from speech_hands.datasets.manifest import Manifest, ManifestItem
from speech_hands.errors import SpeechHandsError
from speech_hands.jsonl import read_appended, rewrite_records
from speech_hands.progress import progress_bar
from speech_hands.reflection.base import ReflectionInput
from speech_hands.types import Action, AgentResult, CandidateViews, ToolOutput

if TYPE_CHECKING:
    from speech_hands.agent import SpeechHands

__all__ = ["ItemResult", "format_question", "load_results", "run_manifest"]


class ItemResult(CandidateViews, BaseModel):
    """Everything the reports need about one item, independent of the agent object."""

    id: str
    task: str = "asr"
    dataset: str = "default"
    split: str | None = None
    category: str | None = None
    speaker: str | None = None
    audio: str | None = Field(default=None, description="the audio file that was run (absolute path)")
    audio_sha256: str | None = Field(
        default=None, description="sha256 of that file: a resumed run redoes a changed one"
    )
    reference: str | None = None
    question: str | None = None
    choices: list[str] = Field(default_factory=list)
    answer: str | None = None
    systems: dict[str, str] = Field(default_factory=dict)
    candidates: list[ToolOutput] = Field(default_factory=list)
    prediction: str = ""
    action: Action | None = Field(default=None, description="where the final answer came from")
    first_action: Action | None = Field(default=None, description="the first-token decision (round 0)")
    probs: dict[Action, float] | None = None
    rewrite_count: int = 0
    rewrite_candidate: str | None = None
    thread_id: str | None = None
    elapsed_s: float = 0.0
    skipped_reason: str | None = None
    error: str | None = Field(default=None, description="why the item could not be run (bad audio, ...)")

    def top(self, output: ToolOutput | None) -> str:
        return output.top.text if output is not None and output.top is not None else ""


def format_question(item: ManifestItem) -> str | None:
    """The question as the agent sees it: the question, then one option per line (``"A. ..."``), the
    form :func:`speech_hands.prompts.split_question` takes apart again."""
    if item.question is None:
        return None
    if not item.choices:
        return item.question
    return item.question + "\n" + "\n".join(item.choices)


def load_results(path: str | Path) -> list[ItemResult]:
    """Results written so far (a truncated last line from a crash is ignored)."""
    return read_appended(path, ItemResult)


def _base(item: ManifestItem, manifest: Manifest) -> dict:
    return {
        "id": item.id,
        "audio": str(manifest.audio_path(item)) if item.audio is not None else None,
        "task": item.task,
        "dataset": item.dataset,
        "split": item.split,
        "category": item.category,
        "speaker": item.speaker,
        "reference": item.reference,
        "question": item.question,
        "choices": item.choices,
        "answer": item.answer,
        "systems": item.systems,
    }


def _same_audio(result: ItemResult, item: ManifestItem, manifest: Manifest) -> bool:
    """Whether ``result`` was computed on the audio the manifest names now."""
    if item.audio is None or result.audio_sha256 is None:
        return True  # replay items have no audio; older records carry no hash
    path = manifest.audio_path(item)
    return path.is_file() and sha256_file(path) == result.audio_sha256


def _rewrite_candidate(agent: SpeechHands, result: AgentResult, label_rewrite: bool) -> str | None:
    if result.rewrites:
        return result.rewrites[0].text
    if not label_rewrite or result.action is None:
        return None
    try:
        inp = ReflectionInput(
            audio=agent.store.get(result.audio),
            question=result.question,
            internal=result.internal,
            externals=result.externals,
        )
        return agent.omni.rewrite(inp).text
    except Exception:  # the label then has no rewrite candidate; the report says how many
        return None


def run_item(agent: SpeechHands, manifest: Manifest, item: ManifestItem, *, label_rewrite: bool = True) -> ItemResult:
    """Run the agent on one item; bad input becomes a recorded error, never an exception."""
    started = time.perf_counter()
    try:
        audio = manifest.audio_path(item) if item.audio is not None else None
        result = agent.invoke(audio, format_question(item), utterance_id=item.id)
    except Exception as exc:  # recorded and counted in the report; the run goes on with the next item
        kind = "input" if isinstance(exc, SpeechHandsError) else "unexpected"
        return ItemResult(
            **_base(item, manifest),
            error=f"{kind}: {type(exc).__name__}: {exc}",
            elapsed_s=time.perf_counter() - started,
        )
    return ItemResult(
        **_base(item, manifest),
        audio_sha256=result.audio.sha256,
        candidates=result.candidates,
        prediction=result.answer,
        action=result.action,
        first_action=result.reflection.action if result.reflection else None,
        probs=result.reflection.probs if result.reflection else None,
        rewrite_count=result.rewrite_count,
        rewrite_candidate=_rewrite_candidate(agent, result, label_rewrite),
        thread_id=result.thread_id,
        skipped_reason=result.skipped_reason,
        elapsed_s=time.perf_counter() - started,
    )


def run_manifest(
    agent: SpeechHands,
    manifest: Manifest,
    results_path: str | Path,
    *,
    resume: bool = True,
    label_rewrite: bool = True,
    console: Console | None = None,
    show_progress: bool = True,
    on_result: Callable[[ItemResult], None] | None = None,
) -> list[ItemResult]:
    """Score every item without a usable result in ``results_path``; return all results in manifest order.

    A stored result is kept when it did not fail and its audio is unchanged; its manifest fields
    (reference, question, ...) are refreshed from ``manifest``."""
    results_path = Path(results_path)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    if not resume and results_path.exists():
        results_path.unlink()
    stored = {r.id: r for r in load_results(results_path)}  # the last record of an id wins
    done: dict[str, ItemResult] = {}
    for item in manifest:
        kept = stored.get(item.id)
        if kept is not None and kept.error is None and _same_audio(kept, item, manifest):
            done[item.id] = kept.model_copy(update=_base(item, manifest))
    if results_path.exists():
        rewrite_records(results_path, done.values())
    todo = [item for item in manifest if item.id not in done]
    with progress_bar(console, disable=not show_progress) as progress:
        task = progress.add_task(f"eval {manifest.name}", total=len(manifest), completed=len(manifest) - len(todo))
        with results_path.open("a", encoding="utf-8") as fh:
            for item in todo:
                outcome = run_item(agent, manifest, item, label_rewrite=label_rewrite)
                fh.write(outcome.model_dump_json() + "\n")
                fh.flush()
                done[item.id] = outcome
                if on_result is not None:
                    on_result(outcome)
                progress.advance(task)
    return [done[item.id] for item in manifest if item.id in done]


def results_in_order(results: Iterable[ItemResult], manifest: Manifest) -> list[ItemResult]:
    by_id = {r.id: r for r in results}
    return [by_id[i.id] for i in manifest if i.id in by_id]
