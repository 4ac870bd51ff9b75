"""``speech-hands train-reflector``: the reflector recipe end to end (docs/reflector.md).

Stages: build the training items (real, augmented, espeak-ng), run the pool over them (cached
records), cross-validate (leave one real speaker out) every rewrite configuration, then fit the
rescoring weights and the reflector on everything and write the artifact with its CV metrics.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from speech_hands.progress import progress_bar

console = Console(stderr=True)

PACKAGE_ARTIFACT = Path(__file__).resolve().parents[1] / "data" / "reflector" / "reflector-v1.json"


def _progress() -> Progress:
    return progress_bar(console)


def train_reflector(
    shared: Optional[Path] = typer.Option(None, help="shared data folder (default ../shared/data or $SPEECH_HANDS_SHARED_DATA)"),
    work_dir: Path = typer.Option(Path(".speech_hands_cache/training"), help="generated audio and cached records"),
    out: Path = typer.Option(PACKAGE_ARTIFACT, help="where to write the artifact"),
    report: Path = typer.Option(Path("reports/reflector_cv.json"), help="cross-validation report (JSON)"),
    seed: int = typer.Option(0, help="recipe seed (augmentation draws, synthesis, model fit)"),
    limit: Optional[int] = typer.Option(None, help="use only the first N real utterances (smoke runs)"),
    espeak: Optional[int] = typer.Option(None, help="espeak-ng utterances (default: the recipe's)"),
    augment: Optional[int] = typer.Option(None, help="augmented copies per real utterance (default: the recipe's)"),
    rewrite: str = typer.Option(
        "auto", help="rewrite config: auto (pick by CV), rescore, rescore+prompted, mbr, mbr+prompted, mbr/risk, mbr+prompted/risk"
    ),
    nested: bool = typer.Option(False, help="also cross-validate the config choice itself (inner CV per held-out speaker, ~1.5 min)"),
) -> None:
    """Train the learned reflector (and rescoring weights) and write the versioned artifact."""
    from speech_hands.training.fit import run_recipe
    from speech_hands.training.recipe import Recipe, default_shared_data

    overrides: dict = {"seed": seed}
    if espeak is not None:
        overrides["espeak_utterances"] = espeak
    if augment is not None:
        overrides["augment_per_utterance"] = augment
    recipe = Recipe(**overrides)
    result = run_recipe(
        recipe,
        shared=shared or default_shared_data(),
        work_dir=work_dir,
        out=out,
        limit=limit,
        rewrite=rewrite,
        nested=nested,
        progress=_progress,
        console=console,
    )
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    _print_summary(result)
    console.print(f"artifact: {out}\nreport: {report} ({date.today().isoformat()})")


def _print_summary(result: dict) -> None:
    chosen = result["chosen"]
    summary = result["cv"][chosen]
    table = Table(title=f"leave-one-speaker-out CV, real dev utterances (rewrite: {chosen})")
    table.add_column("system")
    table.add_column("WER %", justify="right")
    for system, wer in summary["wer"].items():
        table.add_row(system, f"{wer:.2f}")
    Console().print(table)
    Console().print(
        f"agent / best single = {summary['agent_over_best_single']:.3f}; gap closed = {summary['gap_closed']:.3f}; "
        f"per-action F1 = { {k: round(v['f1'], 3) for k, v in summary['per_action'].items()} }"
    )
    others = ", ".join(f"{k} {v['wer']['agent (learned reflector)']:.2f}" for k, v in result["cv"].items())
    Console().print(f"CV agent WER % per config: {others}")
    if "nested_selection" in result:
        n = result["nested_selection"]
        Console().print(f"config choice cross-validated too (nested): agent WER {n['agent_wer']:.2f} % ({n['choices']})")


def register(app: typer.Typer) -> None:
    app.command("train-reflector")(train_reflector)
