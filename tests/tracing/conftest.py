"""A real ``eval run`` folder for the viewer tests, made once per session: the replay agent over 8
LibriSpeech dev utterances and three recorded systems (real graph, real SQLite checkpointer, real
alignment-voting rewrite, real report with gold actions), with a per-item reflection policy so that
every action, a vote tally, a rewrite round, a spent rewrite budget and a failed tool all occur.

Also the headless Chromium (Debian's ``chromium`` driven by Playwright), shared by the browser tests.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from speech_hands import SpeechHands
from speech_hands.backends.replay import ReplayStore
from speech_hands.datasets.builtin import librispeech_dev, replay_from_systems
from speech_hands.datasets.manifest import Manifest
from speech_hands.evals.report import write_report
from speech_hands.evals.runner import ItemResult, run_manifest
from speech_hands.reflection.base import ReflectionInput
from speech_hands.types import Action, Reflection

INTERNAL, EXTERNAL, FLAKY = "b1.rnnt_baseline", "s4.s3+nnlm.biasing_100", "b2.b1+nnlm"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

INT, EXT, RW = Action.INTERNAL, Action.EXTERNAL, Action.REWRITE
#: per item (manifest order): the action of each round and the probability the policy gives it
PLAN: list[tuple[list[Action], float]] = [
    ([INT], 0.85),
    ([EXT], 0.85),
    ([RW, EXT], 0.5),  # rewrites, then takes the tool's answer: final action <external>
    ([INT], 0.45),
    ([EXT], 0.55),
    ([INT], 0.9),
    ([RW, RW], 0.75),  # max_rewrites=1: the second <rewrite> finds the budget spent
    ([INT], 0.8),  # FLAKY has no output recorded for this one: a failed tool
]


class PerItemPolicy:
    """Decides by the utterance: the planned action of the round, with the planned probability; with
    k > 1 the last draw dissents (so the vote has a tally to show). Stands in for a reflection model
    only; the graph, the tools, the vote and the rewrite are the real ones."""

    name = "per-item"

    def __init__(self, plan: dict[str, tuple[list[Action], float]]) -> None:
        self.plan = plan

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        actions, p = self.plan[inp.audio.id]
        action = actions[min(inp.round, len(actions) - 1)]
        probs = {a: (p if a is action else (1 - p) / 2) for a in Action}
        if inp.n_samples > 1 and inp.sample_index == inp.n_samples - 1:
            dissent = EXT if action is INT else INT
            probs = {action: 0.4, dissent: 0.5, ({*Action} - {action, dissent}).pop(): 0.1}
            action = dissent
        external = next((o for o in inp.externals if o.ok), None)
        return Reflection(
            action=action, probs=probs, raw_token=action.token, policy=self.name, external_tool=external.tool
        )


@dataclass
class EvalRun:
    folder: Path
    db: Path
    results: list[ItemResult]
    manifest: Manifest

    def by_thread(self) -> dict[str, ItemResult]:
        return {r.thread_id: r for r in self.results}

    def gold(self) -> dict[str, str]:
        """Item id -> gold action, as the report wrote it (items.csv)."""
        with (self.folder / "items.csv").open(newline="") as fh:
            return {row["id"]: row["gold_action"] for row in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def eval_run(shared_data, tmp_path_factory) -> EvalRun:
    dev = librispeech_dev(shared_data).select(limit=len(PLAN))
    # two datasets in one manifest (as `eval run` reports per dataset): the second half relabelled
    items = [i if n < 4 else i.model_copy(update={"dataset": "librispeech-b"}) for n, i in enumerate(dev.items)]
    manifest = Manifest(items, dev.root, name="viewer-dev")
    store = replay_from_systems(manifest, INTERNAL, [EXTERNAL, FLAKY])
    records = [store.get(i) for i in store.ids]
    last = records[-1]
    records[-1] = last.model_copy(update={"external": {EXTERNAL: last.external[EXTERNAL]}})
    policy = PerItemPolicy({item.id: plan for item, plan in zip(manifest.items, PLAN)})
    folder = tmp_path_factory.mktemp("viewer-eval")
    with SpeechHands.from_replay(
        ReplayStore(records),
        internal_name=INTERNAL,
        external_tools=[EXTERNAL, FLAKY],
        policy=policy,
        k_samples=3,
        max_rewrites=1,
        trace_db=str(folder / "traces.sqlite"),
    ) as agent:
        results = run_manifest(agent, manifest, folder / "results.jsonl", show_progress=False)
    write_report(results, folder, name="viewer-dev", plots=False)
    return EvalRun(folder=folder, db=folder / "traces.sqlite", results=results, manifest=manifest)


@pytest.fixture(scope="module")
def chromium():
    """Headless Debian Chromium under Playwright. Missing, it fails (never skips) with the fix.

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread while it is
    open, so a session-wide browser would break every later test that calls ``asyncio.run``."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the trace viewer is tested in a real browser; install Debian's chromium "
            "(`apt-get install -y chromium`; .ci/run does this)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[dev]'` (no `playwright install` needed)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()
