"""``speech-hands eval ...``: run the agent over a dataset and write a report; re-render reports;
write manifests; score JASCO outputs with LLM judges."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from speech_hands.errors import ConfigurationError

eval_app = typer.Typer(
    help="Evaluate routing: WER / accuracy per system, oracle router, action confusion and F1, plots.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

RULES = ("paper", "threshold")


def label_rule_from(label_rule: str, threshold: float, normalizer: str, cer: bool):
    from speech_hands.metrics.labels import LabelRule

    if label_rule not in RULES:
        raise ConfigurationError(f"--label-rule must be one of {RULES}")
    return LabelRule(rule=label_rule, threshold=threshold, normalizer=normalizer, unit="char" if cer else "word")


def _summary_table(report) -> Table:
    asr = report.task == "asr"
    table = Table(title=f"{report.name} ({report.items} items)")
    table.add_column("system")
    table.add_column("WER %" if asr else "accuracy %", justify="right")
    for s in report.systems:
        value = s.wer if asr else s.accuracy
        style = "bold magenta" if s.kind == "agent" else ("green" if s.kind == "oracle" else "")
        table.add_row(s.name, f"{100 * value:.2f}" if value is not None else "-", style=style)
    return table


def _print_summary(report, out: Path) -> None:
    console.print(_summary_table(report))
    if report.relative_reduction is not None:
        console.print(
            f"relative WER reduction vs best single ({report.best_single}): "
            f"{100 * report.relative_reduction:+.1f}% (negative = the agent is worse)"
        )
    for interval in report.reduction_intervals:
        console.print(f"  paired bootstrap, resampling {interval.unit}s: {interval.describe()}")
    if report.gap_closed is not None:
        console.print(f"gap closed toward the oracle router: {report.gap_closed:.2f}")
    f1 = ", ".join(f"{s.action} {s.f1:.2f}" for s in report.routing.scores)
    console.print(f"action F1: {f1}; accuracy {report.routing.accuracy:.2f}")
    if report.failed_items:
        err_console.print(f"[yellow]{report.failed_items} item(s) failed to run; see {out / 'report.md'}[/yellow]")
    console.print(f"report: {out / 'report.md'} (+ report.json, items.csv, PNG plots)")


def run_dataset(
    dataset: str,
    *,
    root: Path | None,
    out: Path,
    replay: Path | None,
    internal_system: str | None,
    external_system: list[str] | None,
    internal_model: str,
    external_model: list[str] | None,
    n_best: int,
    k_samples: int,
    max_rewrites: int,
    limit: int | None,
    label_rewrite: bool,
    fresh: bool,
    policy: str = "learned",
    reflector: Path | None = None,
):
    """Build the agent the options describe and run it over the dataset (resumable)."""
    from speech_hands.agent import SpeechHands
    from speech_hands.datasets.builtin import replay_from_systems, resolve_manifest
    from speech_hands.evals.runner import run_manifest

    manifest = resolve_manifest(dataset, root).select(limit=limit)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "dataset": dataset,
        "replay": str(replay) if replay else None,
        "internal_system": internal_system,
        "external_system": external_system,
        "internal_model": internal_model,
        "external_model": external_model,
        "n_best": n_best,
        "k_samples": k_samples,
        "max_rewrites": max_rewrites,
        "label_rewrite": label_rewrite,
    }
    if policy != "learned" or reflector is not None:  # only then: earlier default runs keep their fingerprint
        from speech_hands.reflection.learned.policy import ReflectorArtifact

        settings["policy"] = policy
        if reflector is not None and reflector.is_dir():  # a `speech-hands finetune` checkpoint
            from speech_hands.backends.action_whisper import read_checkpoint_info

            settings["reflector"] = read_checkpoint_info(reflector).model_sha256[:16]
        else:
            settings["reflector"] = ReflectorArtifact.load(reflector).checksum() if reflector is not None else None
    else:  # the default agent's artifact: a run made with another default is not resumed into this one
        from speech_hands.reflection.learned.policy import ReflectorArtifact

        settings["reflector"] = ReflectorArtifact.load("fast").checksum()
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    run_file = out / "run.json"
    if run_file.exists() and not fresh:
        earlier = json.loads(run_file.read_text())
        if earlier.get("fingerprint") != fingerprint:
            raise ConfigurationError(
                f"{out} holds results of a run with other settings ({earlier.get('settings')}); "
                "pass --fresh to discard them or --out to write elsewhere"
            )
    config = {
        "n_best": n_best,
        "k_samples": k_samples,
        "max_rewrites": max_rewrites,
        "trace_db": str(out / "traces.sqlite"),
    }
    if internal_system or external_system:
        if not (internal_system and external_system):
            raise ConfigurationError("give both --internal-system and at least one --external-system")
        store = replay_from_systems(manifest, internal_system, list(external_system))
        agent = SpeechHands.from_replay(store, internal_name=internal_system, **config)
    elif replay is not None:
        agent = SpeechHands.from_replay(replay, question_answering=manifest.task == "qa", **config)
    else:
        agent = SpeechHands.default(
            internal_model=internal_model,
            external_models=tuple(external_model or ["bundled:tiny.en"]),
            policy=policy,
            reflector=reflector,
            **config,
        )
    run_file.write_text(json.dumps({"fingerprint": fingerprint, "settings": settings}, indent=2) + "\n")
    with agent:
        results = run_manifest(agent, manifest, out / "results.jsonl", resume=not fresh, label_rewrite=label_rewrite)
    return manifest, results


# Options shared by `eval run` and `labels` (typer needs them spelled out per command).
DatasetArg = typer.Argument(
    ...,
    help="built-in dataset (librispeech-dev, librispeech-test-other-text, fsdd, fsdd-train, esc10) or a manifest .jsonl",
)
RootOpt = typer.Option(None, help="folder the manifest's audio paths are relative to (default: its folder)")
ReplayOpt = typer.Option(None, help="route over recorded outputs from this replay JSONL")
InternalSystemOpt = typer.Option(None, help="recorded system in the manifest to use as the internal prediction")
ExternalSystemOpt = typer.Option(None, help="recorded system(s) to use as external tools; repeatable")
InternalModelOpt = typer.Option("bundled:base", help="faster-whisper model for the internal prediction")
ExternalModelOpt = typer.Option(None, help="external ASR model(s); repeatable")
PolicyOpt = typer.Option(
    "learned",
    help="reflection policy of the model agent: learned (trained reflector) or confidence (hand-set baseline)",
)
ReflectorOpt = typer.Option(
    None,
    help="reflector: full (the shipped one with the scoring pass; default: the shipped fast one), an artifact "
    "from `speech-hands train-reflector --out`, or a checkpoint folder from `speech-hands finetune` (the "
    "action-token Whisper)",
)
NormalizerOpt = typer.Option("english", help="english (Whisper's English normaliser), basic, or none")
CerOpt = typer.Option(False, "--cer", help="character error rate (languages without spaces)")
RuleOpt = typer.Option("paper", help="gold-action rule: paper or threshold")
ThresholdOpt = typer.Option(0.0, help="threshold rule: WER at or below which a candidate is right")


@eval_app.command("run")
def run(
    dataset: str = DatasetArg,
    root: Path | None = RootOpt,
    out: Path | None = typer.Option(None, help="output folder (default reports/<dataset>)"),
    replay: Path | None = ReplayOpt,
    internal_system: str | None = InternalSystemOpt,
    external_system: list[str] | None = ExternalSystemOpt,
    internal_model: str = InternalModelOpt,
    external_model: list[str] | None = ExternalModelOpt,
    policy: str = PolicyOpt,
    reflector: Path | None = ReflectorOpt,
    n_best: int = typer.Option(5, help="hypotheses per ASR tool"),
    k_samples: int = typer.Option(1, "--k", help="reflection draws (majority voting when > 1)"),
    max_rewrites: int = typer.Option(1, help="bound of the rewrite loop"),
    limit: int | None = typer.Option(None, help="only the first N items"),
    normalizer: str = NormalizerOpt,
    cer: bool = CerOpt,
    label_rule: str = RuleOpt,
    threshold: float = ThresholdOpt,
    label_rewrite: bool = typer.Option(True, help="run the rewrite strategy on every item for the gold labels"),
    fresh: bool = typer.Option(
        False, "--fresh", help="discard earlier results in the output folder instead of resuming"
    ),
    plots: bool = typer.Option(True, help="write PNG plots"),
) -> None:
    """Run the agent over DATASET (resumable) and write report.md / report.json / items.csv / plots."""
    from speech_hands.evals.report import write_report

    rule = label_rule_from(label_rule, threshold, normalizer, cer)
    out = out or Path("reports") / Path(dataset).stem
    manifest, results = run_dataset(
        dataset,
        root=root,
        out=out,
        replay=replay,
        internal_system=internal_system,
        external_system=external_system,
        internal_model=internal_model,
        external_model=external_model,
        n_best=n_best,
        k_samples=k_samples,
        max_rewrites=max_rewrites,
        limit=limit,
        label_rewrite=label_rewrite,
        fresh=fresh,
        policy=policy,
        reflector=reflector,
    )
    report = write_report(
        results, out, name=manifest.name, normalizer=normalizer, unit=rule.unit, rule=rule, plots=plots
    )
    _print_summary(report, out)


@eval_app.command("report")
def report(
    out: Path = typer.Argument(..., help="an output folder of `eval run` (holds results.jsonl)"),
    normalizer: str = typer.Option("english", help="english, basic or none"),
    cer: bool = typer.Option(False, "--cer", help="character error rate"),
    label_rule: str = typer.Option("paper", help="paper or threshold"),
    threshold: float = typer.Option(0.0, help="threshold rule: WER at or below which a candidate is right"),
    plots: bool = typer.Option(True, help="write PNG plots"),
) -> None:
    """Re-render a report from stored results (no model runs), e.g. with another normaliser or rule."""
    from speech_hands.evals.report import write_report
    from speech_hands.evals.runner import load_results

    results = load_results(out / "results.jsonl")
    if not results:
        raise ConfigurationError(f"no results in {out / 'results.jsonl'}; run `speech-hands eval run` first")
    rule = label_rule_from(label_rule, threshold, normalizer, cer)
    rep = write_report(results, out, name=out.name, normalizer=normalizer, unit=rule.unit, rule=rule, plots=plots)
    _print_summary(rep, out)


@eval_app.command("compare")
def compare(
    run_a: Path = typer.Argument(..., help="an `eval run` output folder: the candidate (A)"),
    run_b: Path = typer.Argument(..., help="another `eval run` output folder over the same items: the baseline (B)"),
    normalizer: str = typer.Option("english", help="english, basic or none"),
    cer: bool = typer.Option(False, "--cer", help="character error rate"),
    out: Path | None = typer.Option(None, help="also write the comparison as JSON here"),
) -> None:
    """Is agent A better than agent B on the same items? WERs, per-item wins and a paired bootstrap."""
    from speech_hands.evals.compare import compare_runs

    c = compare_runs(run_a, run_b, normalizer=normalizer, unit="char" if cer else "word")
    table = Table(title=f"{c.items} common items ({c.reference_words} reference {'characters' if cer else 'words'})")
    for column in ("run", "WER %", "errors", "items it wins"):
        table.add_column(column, justify="left" if column == "run" else "right")
    table.add_row(f"A: {c.run_a}", f"{100 * c.wer_a:.2f}", str(c.errors_a), str(c.a_better), style="bold magenta")
    table.add_row(f"B: {c.run_b}", f"{100 * c.wer_b:.2f}", str(c.errors_b), str(c.b_better))
    console.print(table)
    console.print(f"ties: {c.same} items; left out (in one run only): A {c.only_a}, B {c.only_b}")
    for interval in c.intervals:
        console.print(f"A's relative reduction over B, resampling {interval.unit}s: {interval.describe()}")
    if c.action_changes:
        console.print(f"final-answer source changes (B -> A): {c.action_changes}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(c.model_dump_json(indent=2) + "\n", encoding="utf-8")
        console.print(f"written: {out}")


@eval_app.command("manifest")
def manifest(
    dataset: str = typer.Argument(..., help="built-in dataset name"),
    out: Path = typer.Option(..., "--out", help="where to write the JSONL manifest"),
) -> None:
    """Write a built-in dataset as a JSONL manifest (audio paths relative to the dataset folder)."""
    from speech_hands.datasets.builtin import BUILTIN

    if dataset not in BUILTIN:
        raise ConfigurationError(f"unknown dataset {dataset!r}; built-in: {', '.join(BUILTIN)}")
    m = BUILTIN[dataset]()
    m.save(out)
    console.print(f"{len(m)} items -> {out}; audio paths are relative to {m.root} (pass --root {m.root} to `eval run`)")


@eval_app.command("jasco")
def jasco(
    csv_path: Path = typer.Argument(..., help="the benchmark CSV with the evaluated model's answers (allm_output)"),
    judge: list[str] = typer.Option(
        ..., help="module:attribute of a langchain-core chat model (or a factory); repeatable"
    ),
    out: Path = typer.Option(Path("reports/jasco"), help="output folder"),
    limit: int | None = typer.Option(None, help="only the first N rows"),
) -> None:
    """Score a JASCO ("What Are They Doing") CSV with one or more LLM judges (best-mean, dependence)."""
    import importlib

    from speech_hands.evals.jasco import judge_rows, load_jasco_csv, render_markdown, score_verdicts

    models = []
    for spec in judge:
        module_name, _, attr = spec.partition(":")
        if not attr:
            raise ConfigurationError(f"--judge {spec!r}: expected module:attribute, e.g. my_judges:llama")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"--judge {spec!r}: cannot import it ({exc})") from exc
        models.append(obj() if callable(obj) and not hasattr(obj, "invoke") else obj)
    rows = load_jasco_csv(csv_path)[:limit]
    verdicts = judge_rows(rows, models)
    report = score_verdicts(rows, verdicts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "jasco.json").write_text(report.model_dump_json(indent=2) + "\n")
    (out / "jasco.md").write_text(render_markdown(report))
    with (out / "verdicts.jsonl").open("w", encoding="utf-8") as fh:
        for _j, per_judge in enumerate(verdicts):
            for row, verdict in zip(rows, per_judge):
                fh.write(json.dumps({"row_id": row.id, "prompt": row.prompt, **verdict.model_dump()}) + "\n")
    console.print(render_markdown(report))


@eval_app.command("import-nbest")
def import_nbest(
    nbest_file: Path = typer.Argument(..., help="a paper-style {dataset}_{split}_{asr}_5_best.jsonl file"),
    root: Path = typer.Option(..., help="folder the audio files lie under (paths become relative to it)"),
    out: Path = typer.Option(..., "--out", help="folder for manifest.jsonl and replay.jsonl"),
    internal: Path | None = typer.Option(
        None, help="the omni model's own predictions: TSV (id<TAB>text) or JSONL {id, text}"
    ),
) -> None:
    """Turn the paper's recorded N-best file into a manifest + replay file for `eval run --replay`."""
    from speech_hands.backends.replay import ReplayStore
    from speech_hands.datasets.builtin import paper_nbest_records

    own: dict[str, str] = {}
    if internal is not None:
        for line in internal.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                row = json.loads(line)
                own[str(row["id"])] = row["text"]
            else:
                uid, _, text = line.partition("\t")
                own[uid] = text
    manifest, records = paper_nbest_records(nbest_file, root=root, internal=own or None)
    out.mkdir(parents=True, exist_ok=True)
    manifest.save(out / "manifest.jsonl")
    ReplayStore(records).to_jsonl(out / "replay.jsonl")
    console.print(
        f"{len(manifest)} items -> {out / 'manifest.jsonl'} and {out / 'replay.jsonl'}; run:\n"
        f"  speech-hands eval run {out / 'manifest.jsonl'} --root {manifest.root} --replay {out / 'replay.jsonl'}"
    )


def register(app: typer.Typer) -> None:
    """Attach ``eval`` to the main command line."""
    app.add_typer(eval_app, name="eval")
