"""``speech-hands train-reflector``, ``labels``, ``export-sft`` and ``finetune`` (docs/reflector.md).

``train-reflector`` runs the reflector recipe end to end.

Stages: build the training items (real, augmented, espeak-ng), run the pool over them (cached
records), cross-validate (leave one real speaker out) every rewrite configuration, then fit the
rescoring weights and the reflector on everything and write the artifact with its CV metrics.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from speech_hands.errors import ConfigurationError
from speech_hands.evals import cli as eval_cli
from speech_hands.progress import progress_bar
from speech_hands.reflection.learned.policy import DEFAULT_ARTIFACT, SHIPPED_DIR

console = Console(stderr=True)

PACKAGE_ARTIFACT = SHIPPED_DIR / DEFAULT_ARTIFACT


def _progress() -> Progress:
    return progress_bar(console)


def train_reflector(
    shared: Path | None = typer.Option(
        None, help="shared data folder (default ../shared/data or $SPEECH_HANDS_SHARED_DATA)"
    ),
    work_dir: Path = typer.Option(Path(".speech_hands_cache/training"), help="generated audio and cached records"),
    out: Path = typer.Option(PACKAGE_ARTIFACT, help="where to write the artifact"),
    report: Path = typer.Option(Path("reports/reflector_cv.json"), help="cross-validation report (JSON)"),
    data: list[str] | None = typer.Option(
        None,
        help="real transcribed speech to train and cross-validate on (repeatable): a shared-data folder with "
        "transcripts.tsv (default librispeech_other_dev), a built-in dataset (fsdd, fsdd-train, librispeech-dev) or a manifest "
        ".jsonl with speakers",
    ),
    seed: int = typer.Option(0, help="recipe seed (augmentation draws, synthesis, model fit)"),
    limit: int | None = typer.Option(None, help="use only the first N real utterances (smoke runs)"),
    espeak: int | None = typer.Option(None, help="espeak-ng utterances (default: the recipe's)"),
    augment: int | None = typer.Option(None, help="augmented copies per real utterance (default: the recipe's)"),
    rewrite: str = typer.Option(
        "auto",
        help="rewrite config: auto (pick by CV among rescore, rescore+prompted, mbr, mbr+prompted, mbr/risk, "
        "mbr+prompted/risk), one of those, or nbest-mbr/risk (the fast default: no scoring pass at inference)",
    ),
    nested: bool = typer.Option(
        False, help="also cross-validate the config choice itself (inner CV per held-out speaker, ~1.5 min)"
    ),
) -> None:
    """Train the learned reflector (and rescoring weights) and write the versioned artifact."""
    from speech_hands.training.pipeline import run_recipe
    from speech_hands.training.recipe import Recipe, default_shared_data

    overrides: dict = {"seed": seed}
    if data:
        overrides["data"] = data[0] if len(data) == 1 else tuple(data)
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
    _print_summary(result, recipe.data if isinstance(recipe.data, str) else " + ".join(recipe.data))
    console.print(f"artifact: {out}\nreport: {report} ({date.today().isoformat()})")


def _print_summary(result: dict, data: str) -> None:
    chosen = result["chosen"]
    summary = result["cv"][chosen]
    table = Table(title=f"leave-one-speaker-out CV, real utterances of {data} (rewrite: {chosen})")
    table.add_column("system")
    table.add_column("WER %", justify="right")
    for system, wer in summary["wer"].items():
        table.add_row(system, f"{wer:.2f}")
    Console().print(table)
    Console().print(
        f"agent / best single = {summary['agent_over_best_single']:.3f}; gap closed = {summary['gap_closed']:.3f}; "
        f"per-action F1 = { {k: round(v['f1'], 3) for k, v in summary['per_action'].items()} }"
    )
    for interval in summary.get("reduction_intervals", []):
        Console().print(
            f"  relative reduction vs best single, paired bootstrap over {interval['unit']}s: "
            f"{100 * interval['estimate']:+.1f}% [{100 * interval['low']:+.1f}%, {100 * interval['high']:+.1f}%] "
            f"(95%; P(not better) = {interval['p_not_better']:.3f})"
        )
    speakers = summary.get("per_speaker", {})
    if speakers:
        better = sum(1 for row in speakers.values() if row["agent_errors"] < row["best_single_errors"])
        worse = sum(1 for row in speakers.values() if row["agent_errors"] > row["best_single_errors"])
        detail = ", ".join(f"{k} {v['best_single_errors']}->{v['agent_errors']}" for k, v in speakers.items())
        Console().print(
            f"  word errors per held-out speaker, best single -> agent: {detail} "
            f"(agent better for {better}, worse for {worse} of {len(speakers)})"
        )
    if len(summary.get("per_corpus", {})) > 1:
        per = Table(title="the same CV, per corpus")
        for column in (
            "corpus",
            "words",
            "best single %",
            "confidence agent %",
            "learned agent %",
            "x best single",
            "gap closed",
        ):
            per.add_column(column, justify="left" if column == "corpus" else "right")
        for corpus, row in summary["per_corpus"].items():
            per.add_row(
                corpus,
                str(row["words"]),
                f"{row['best_single']:.2f}",
                f"{row['wer']['agent (confidence baseline + alignment vote)']:.2f}",
                f"{row['wer']['agent (learned reflector)']:.2f}",
                f"{row['agent_over_best_single']:.3f}",
                f"{row['gap_closed']:.3f}",
            )
        Console().print(per)
    others = ", ".join(f"{k} {v['wer']['agent (learned reflector)']:.2f}" for k, v in result["cv"].items())
    Console().print(f"CV agent WER % per config: {others}")
    if "nested_selection" in result:
        n = result["nested_selection"]
        Console().print(
            f"config choice cross-validated too (nested): agent WER {n['agent_wer']:.2f} % ({n['choices']})"
        )
        if len(n.get("per_corpus", {})) > 1:
            Console().print(f"nested, per corpus: {n['per_corpus']}")


def labels(
    source: str = typer.Argument(..., help="an `eval run` output folder, or a dataset / manifest to run now"),
    out: Path = typer.Option(..., "--out", help="folder for labels.jsonl, internal/external/rewrite.jsonl, sft.jsonl"),
    root: Path | None = eval_cli.RootOpt,
    replay: Path | None = eval_cli.ReplayOpt,
    internal_system: str | None = eval_cli.InternalSystemOpt,
    external_system: list[str] | None = eval_cli.ExternalSystemOpt,
    internal_model: str = eval_cli.InternalModelOpt,
    external_model: list[str] | None = eval_cli.ExternalModelOpt,
    policy: str = eval_cli.PolicyOpt,
    reflector: Path | None = eval_cli.ReflectorOpt,
    n_best: int = typer.Option(5, help="hypotheses per ASR tool"),
    limit: int | None = typer.Option(None, help="only the first N items"),
    normalizer: str = eval_cli.NormalizerOpt,
    cer: bool = eval_cli.CerOpt,
    label_rule: str = eval_cli.RuleOpt,
    threshold: float = eval_cli.ThresholdOpt,
    target: str = typer.Option("gold", help="SFT target text: gold (every action) or source (routed text)"),
) -> None:
    """Build gold actions and supervision files (the paper's three label files + SFT records)."""
    from speech_hands.evals.runner import load_results
    from speech_hands.training.supervision import write_supervision

    if target not in ("gold", "source"):
        raise ConfigurationError("--target must be gold or source")
    rule = eval_cli.label_rule_from(label_rule, threshold, normalizer, cer)
    folder = Path(source)
    audio_paths: dict[str, str] = {}
    if folder.is_dir() and (folder / "results.jsonl").exists():
        results = load_results(folder / "results.jsonl")
    else:
        manifest, results = eval_cli.run_dataset(
            source,
            root=root,
            out=out / "run",
            replay=replay,
            internal_system=internal_system,
            external_system=external_system,
            internal_model=internal_model,
            external_model=external_model,
            n_best=n_best,
            k_samples=1,
            max_rewrites=1,
            limit=limit,
            label_rewrite=True,
            fresh=False,
            policy=policy,
            reflector=reflector,
        )
        audio_paths = {i.id: str(manifest.audio_path(i)) for i in manifest if i.audio is not None}
    counts = write_supervision(results, out, rule, target=target, audio_paths=audio_paths)  # type: ignore[arg-type]
    eval_cli.console.print(f"gold actions ({rule.describe()}): {counts}")
    eval_cli.console.print(f"written: {out}/labels.jsonl, internal.jsonl, external.jsonl, rewrite.jsonl, sft.jsonl")


def export_sft(
    labels_dir: Path = typer.Argument(..., help="a folder written by `speech-hands labels` (labels.jsonl)"),
    out: Path = typer.Option(..., "--out", help="folder for the ShareGPT files, dataset_info.json, train/test.jsonl"),
    n_best: int = typer.Option(5, help="external hypotheses per tool in the prompt (the paper: 5; or 1)"),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="attach the audio (off: the text-only reflector)"),
    target: str = typer.Option("gold", help="text after the token: gold (every action) or source (routed text)"),
    balance: str = typer.Option("none", help="training-split class balancing: none or oversample"),
    max_ratio: float = typer.Option(10.0, help="oversample: at most this many copies of one item"),
    cap_per_dataset: int | None = typer.Option(20_000, help="items kept per dataset (the paper: 20k)"),
    test_speakers: float = typer.Option(0.0, help="share of speakers held out as a speaker-disjoint test split"),
    seed: int = typer.Option(0, help="seed of the cap, the split and the oversampling"),
) -> None:
    """Export gold labels as fine-tuning data: ShareGPT for LLaMA-Factory, and the project's own format."""
    from speech_hands.training.export import ExportOptions
    from speech_hands.training.export import export_sft as run_export

    try:
        options = ExportOptions(
            n_best=n_best,
            audio=audio,
            target=target,
            balance=balance,
            max_ratio=max_ratio,
            cap_per_dataset=cap_per_dataset,
            test_speakers=test_speakers,
            seed=seed,
        )
    except ValueError as exc:
        raise ConfigurationError(f"export-sft: {exc}") from exc
    summary = run_export(labels_dir, out, options)
    for split, counts in summary["counts"].items():
        eval_cli.console.print(
            f"{split}: {counts['records']} records, {counts['speakers']} speakers, {counts['actions']}"
        )
    eval_cli.console.print(f"written: {out}/dataset_info.json, speech_hands_sft_*.json, *.jsonl, export.json")


def finetune(
    data: Path = typer.Option(..., "--data", help="an `export-sft` folder (train.jsonl, optionally test.jsonl)"),
    model: str = typer.Option(
        "bundled:base",
        help="model to fine-tune: a Whisper (bundled:base, bundled:tiny.en, a CTranslate2 dir or a .pt: the "
        "action-token Whisper) or a text LLM (bundled:qwen2.5-0.5b, a .gguf, a transformers dir: the text reflector; "
        "use --lora)",
    ),
    out: Path = typer.Option(
        ..., "--out", help="checkpoint folder (model.pt, tokenizer, reflector.json, metrics.json)"
    ),
    lora: bool = typer.Option(False, "--lora/--full", help="LoRA adapters (merged when saved) or all decoder weights"),
    lora_rank: int = typer.Option(8, help="LoRA rank"),
    epochs: int = typer.Option(3, help="passes over the training records"),
    max_steps: int | None = typer.Option(None, help="stop after this many optimizer steps"),
    lr: float | None = typer.Option(None, help="peak learning rate (default 1e-5 full, 3e-4 LoRA)"),
    batch_size: int = typer.Option(8, help="records per step"),
    action_weight: float = typer.Option(1.0, help="loss weight of the action token relative to a text token"),
    context: str = typer.Option("externals", help="previous-text context: externals, or externals+internal"),
    seed: int = typer.Option(0, help="seed of the data order"),
    resume: bool = typer.Option(False, "--resume", help="continue the run saved in --out (same settings only)"),
    fresh: bool = typer.Option(False, "--fresh", help="discard what --out holds and start over"),
    save_every: int = typer.Option(50, help="save the training state every N steps (and at the last)"),
    keep_state: bool = typer.Option(False, help="keep the optimizer state after the run (for a later --resume)"),
    states_dir: Path | None = typer.Option(None, help="cache of encoder states (default ~/.cache/speech_hands)"),
) -> None:
    """Fine-tune the action-token Whisper, or the text reflector LLM, on `export-sft` records (docs/reflector.md)."""
    from speech_hands.training.finetune import FinetuneSettings
    from speech_hands.training.finetune import finetune as run_finetune
    from speech_hands.training.finetune_llm import finetune_llm, is_llm_spec

    try:
        settings = FinetuneSettings(
            model=model,
            lora=lora,
            lora_rank=lora_rank,
            epochs=epochs,
            max_steps=max_steps,
            lr=lr,
            batch_size=batch_size,
            action_weight=action_weight,
            context=context,  # type: ignore[arg-type]
            seed=seed,
        )
    except ValueError as exc:
        raise ConfigurationError(f"finetune: {exc}") from exc
    if is_llm_spec(model):  # the text reflector LLM (no audio): bundled:qwen2.5-0.5b, a .gguf, a directory
        metrics = finetune_llm(
            data,
            out,
            settings,
            resume=resume,
            fresh=fresh,
            save_every=save_every,
            keep_state=keep_state,
            console=console,
        )
    else:
        metrics = run_finetune(
            data,
            out,
            settings,
            resume=resume,
            fresh=fresh,
            save_every=save_every,
            keep_state=keep_state,
            states_dir=states_dir,
            console=console,
        )
    loss = metrics["curve"]["loss"]
    if loss:
        console.print(
            f"{metrics['steps']} steps ({metrics['step_time_s']:.2f} s each): loss {loss[0]:.3f} -> {loss[-1]:.3f}"
        )
    for split in ("train", "held_out"):
        if split in metrics:
            m = metrics[split]
            f1 = {a: round(v["f1"], 2) for a, v in m["per_action"].items()}
            console.print(f"{split}: {m['items']} records, action accuracy {m['accuracy']:.3f}, F1 {f1}")
            if "wer" in m:
                w = m["wer"]
                console.print(
                    f"  WER % routed {w['routed']:.2f} (internal {w['internal']:.2f}, external {w['external']:.2f})"
                )
    console.print(f"checkpoint: {out} (use it with `speech-hands transcribe FILE --reflector {out}`)")


def register(app: typer.Typer) -> None:
    app.command("train-reflector")(train_reflector)
    app.command("labels")(labels)
    app.command("export-sft")(export_sft)
    app.command("finetune")(finetune)
