"""Manifests (incl. path escaping), the resumable runner, reports with plots, supervision files and the
`eval` / `labels` commands, over real recorded ASR outputs (replay: no model weights needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jiwer
import pytest
from typer.testing import CliRunner

from speech_hands import SpeechHands
from speech_hands.datasets.builtin import esc10, fsdd, librispeech_dev, replay_from_systems, resolve_manifest
from speech_hands.datasets.manifest import Manifest, ManifestItem
from speech_hands.errors import ConfigurationError
from speech_hands.evals.report import build_report, write_report
from speech_hands.evals.runner import load_results, run_manifest
from speech_hands.metrics.labels import LabelRule
from speech_hands.text import normalize_english
from speech_hands.training.supervision import write_supervision

INTERNAL, EXTERNAL = "b1.rnnt_baseline", "s4.s3+nnlm.biasing_100"

# ------------------------------------------------------------------------------------------ manifests


def _write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_manifest_round_trip_and_relative_paths(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(b"")
    path = _write_lines(tmp_path / "m.jsonl", [{"id": "a", "audio": "audio/a.wav", "reference": "hi", "speaker": "s1"}])
    manifest = Manifest.load(path)
    assert manifest.audio_path(manifest.items[0]) == (tmp_path / "audio" / "a.wav").resolve()
    again = Manifest.load(manifest.save(tmp_path / "copy.jsonl"))
    assert again.items == manifest.items


@pytest.mark.parametrize("bad", ["../secret.wav", "audio/../../secret.wav"])
def test_manifest_paths_escaping_the_root_are_rejected(tmp_path, bad):
    path = _write_lines(tmp_path / "m.jsonl", [{"id": "a", "audio": bad, "reference": "hi"}])
    with pytest.raises(ConfigurationError, match="escapes the manifest root"):
        Manifest.load(path)


def test_absolute_paths_and_escaping_links_are_rejected(tmp_path):
    outside = tmp_path / "outside.wav"
    outside.write_bytes(b"")
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ConfigurationError, match="absolute"):
        Manifest.load(_write_lines(root / "m.jsonl", [{"id": "a", "audio": str(outside), "reference": "x"}]))
    os.symlink(outside, root / "link.wav")
    with pytest.raises(ConfigurationError, match="escapes"):
        Manifest.load(_write_lines(root / "m.jsonl", [{"id": "a", "audio": "link.wav", "reference": "x"}]))


def test_manifest_errors_name_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "reference": "x"}\n{"id": "b"}\n')
    with pytest.raises(ConfigurationError, match=r"m.jsonl:2"):
        Manifest.load(path)
    path.write_text('{"id": "a", "reference": "x"}\n{"id": "a", "reference": "y"}\n')
    with pytest.raises(ConfigurationError, match="twice"):
        Manifest.load(path)
    with pytest.raises(ValueError, match="not one of the choices"):
        ManifestItem(id="q", question="?", choices=["A. x"], answer="B. y")


def test_builtin_datasets(shared_data):
    dev = librispeech_dev(shared_data)
    assert len(dev) == 60 and len({i.speaker for i in dev}) == 6 and len(dev.system_names) == 7
    assert all(dev.audio_path(i).exists() for i in dev.items[:3])
    digits = fsdd(shared_data)
    assert len(digits) == 300 and {i.split for i in digits} == {"test"}
    assert next(i for i in digits if i.id == "7_jackson_3").reference == "seven"
    train = resolve_manifest("fsdd-train", data_dir=shared_data)
    assert len(train) == 2700 and {i.split for i in train} == {"train"}
    assert not {i.id for i in train} & {i.id for i in digits}  # disjoint takes, same speakers
    assert {i.speaker for i in train} == {i.speaker for i in digits}
    sounds = esc10(shared_data)
    assert len(sounds) == 400 and sounds.task == "qa" and len(sounds.items[0].choices) == 10
    with pytest.raises(ConfigurationError, match="unknown dataset"):
        resolve_manifest("no-such-dataset")


# ------------------------------------------------------------------------------------------ runner


@pytest.fixture()
def dev_subset(shared_data) -> Manifest:
    return librispeech_dev(shared_data).select(limit=12)


def _replay_agent(manifest: Manifest, tmp_path: Path) -> SpeechHands:
    store = replay_from_systems(manifest, INTERNAL, [EXTERNAL])
    return SpeechHands.from_replay(store, internal_name=INTERNAL, trace_db=str(tmp_path / "t.sqlite"))


def test_run_is_resumable_and_skips_scored_items(dev_subset, tmp_path):
    results_path = tmp_path / "results.jsonl"
    seen: list[str] = []

    def stop_after_five(result):
        seen.append(result.id)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with _replay_agent(dev_subset, tmp_path) as agent, pytest.raises(KeyboardInterrupt):
        run_manifest(agent, dev_subset, results_path, on_result=stop_after_five, show_progress=False)
    assert [r.id for r in load_results(results_path)] == seen
    with results_path.open("a") as fh:  # a half-written line, as a crash would leave
        fh.write('{"id": "1688-142285-0009", "task": "a')
    resumed: list[str] = []
    with _replay_agent(dev_subset, tmp_path) as agent:
        results = run_manifest(
            agent, dev_subset, results_path, on_result=lambda r: resumed.append(r.id), show_progress=False
        )
    assert len(resumed) == 7 and not set(resumed) & set(seen)
    assert [r.id for r in results] == [i.id for i in dev_subset]


def test_bad_audio_is_recorded_not_raised(tmp_path, shared_data):
    (tmp_path / "broken.flac").write_bytes(b"not audio at all" * 100)
    manifest = Manifest([ManifestItem(id="broken", audio="broken.flac", reference="hello")], tmp_path)
    from speech_hands.backends.replay import ReplayRecord, ReplayStore

    store = ReplayStore([ReplayRecord(id="broken", internal=["hello"], external={"x": ["hullo"]})])
    with SpeechHands.from_replay(store, trace_db=":memory:") as agent:
        (result,) = run_manifest(agent, manifest, tmp_path / "r.jsonl", show_progress=False)
    assert result.error and "AudioError" in result.error
    report = build_report([result])
    assert report.failed_items == 1 and report.failures[0].startswith("broken")


def test_report_numbers_match_an_independent_computation(shared_data, tmp_path):
    dev_subset = librispeech_dev(shared_data)
    with _replay_agent(dev_subset, tmp_path) as agent:
        results = run_manifest(agent, dev_subset, tmp_path / "results.jsonl", show_progress=False)
    report = write_report(results, tmp_path / "out", name="dev12")
    refs = [normalize_english(i.reference) for i in dev_subset]
    for system in (INTERNAL, EXTERNAL, "b2.b1+nnlm"):
        hyps = [normalize_english(i.systems[system]) for i in dev_subset]
        expected = jiwer.wer(refs, hyps)
        assert report.system(f"recorded: {system}").wer == pytest.approx(expected)
    assert report.system(f"internal: {INTERNAL}").wer == pytest.approx(report.system(f"recorded: {INTERNAL}").wer)
    singles = [report.system(f"internal: {INTERNAL}").wer, report.system(f"external top-1: {EXTERNAL}").wer]
    oracle = report.system("oracle router (internal / external top-1 / rewrite)").wer
    assert oracle <= report.system("best-of-two (per-item oracle, no rewrite)").wer <= min(singles)
    agent_wer = report.system("agent").wer
    assert report.gap_closed == pytest.approx((min(singles) - agent_wer) / (min(singles) - oracle))
    # paired bootstrap of the relative reduction: items, then the 6 speakers; centred on the estimate
    items, speakers = report.reduction_intervals
    assert (items.unit, items.clusters, speakers.unit, speakers.clusters) == ("item", 60, "speaker", 6)
    for interval in (items, speakers):
        assert interval.estimate == pytest.approx(report.relative_reduction)
        assert interval.low <= interval.estimate <= interval.high
    assert "paired bootstrap" in (tmp_path / "out" / "report.md").read_text()
    confusion = report.routing.confusion
    assert sum(sum(row.values()) for row in confusion.values()) == report.routing.labelled == 60
    for name in ("report.md", "report.json", "items.csv", "systems.png", "confusion.png", "actions.png"):
        assert (tmp_path / "out" / name).exists(), name
    assert (tmp_path / "out" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "| gold \\ predicted |" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["items"] == 60
    # per-dataset tables: split the items in two datasets; their counts add up to the overall row
    mixed = [r.model_copy(update={"dataset": "a" if i % 2 else "b"}) for i, r in enumerate(results)]
    split = build_report(mixed)
    assert set(split.per_dataset) == {"a", "b"}
    parts = [next(s for s in rows if s.name == "agent").counts for rows in split.per_dataset.values()]
    assert parts[0].errors + parts[1].errors == split.system("agent").counts.errors


def test_supervision_files(dev_subset, tmp_path):
    with _replay_agent(dev_subset, tmp_path) as agent:
        results = run_manifest(agent, dev_subset, tmp_path / "results.jsonl", show_progress=False)
    counts = write_supervision(results, tmp_path / "labels", LabelRule())
    assert sum(counts[a] for a in ("internal", "external", "rewrite")) == 12
    sft = [json.loads(line) for line in (tmp_path / "labels" / "sft.jsonl").read_text().splitlines()]
    per_file = {
        a: len((tmp_path / "labels" / f"{a}.jsonl").read_text().splitlines())
        for a in ("internal", "external", "rewrite")
    }
    assert per_file == {a: counts[a] for a in per_file}
    gold = {i.id: i.reference for i in dev_subset}
    for record in sft:
        token = f"<{record['action']}>"
        assert record["target"] == token + gold[record["id"]]  # gold text, no space after the token
        assert record["audio"].endswith(".flac")
        assert dev_subset.items[0].systems[EXTERNAL] in sft[0]["prompt"] or record is not sft[0]


# ------------------------------------------------------------------------------------------ CLI


def test_eval_run_report_and_labels_commands(tmp_path, shared_data, monkeypatch):
    from speech_hands.cli import app

    monkeypatch.setenv("SPEECH_HANDS_SHARED_DATA", str(shared_data))
    runner = CliRunner()
    out = tmp_path / "run"
    args = [
        "eval",
        "run",
        "librispeech-dev",
        "--internal-system",
        INTERNAL,
        "--external-system",
        EXTERNAL,
        "--limit",
        "6",
        "--out",
        str(out),
        "--no-plots",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "oracle router" in result.output and (out / "report.md").exists()
    # the same folder with other settings is refused instead of mixing results
    other = runner.invoke(app, [*args[:-3], "--limit", "6", "--out", str(out), "--max-rewrites", "0"])
    assert other.exit_code != 0 and "other settings" in str(other.exception)
    rerendered = runner.invoke(app, ["eval", "report", str(out), "--normalizer", "basic", "--no-plots"])
    assert rerendered.exit_code == 0, rerendered.output
    assert json.loads((out / "report.json").read_text())["normalizer"] == "basic"
    labelled = runner.invoke(app, ["labels", str(out), "--out", str(tmp_path / "labels")])
    assert labelled.exit_code == 0, labelled.output
    assert len((tmp_path / "labels" / "labels.jsonl").read_text().splitlines()) == 6


def test_eval_run_with_the_baseline_policy_on_real_models(tmp_path, shared_data, monkeypatch):
    """``--policy`` reaches the model agent (the traces name it) and is part of the run's settings."""
    from speech_hands.cli import app

    monkeypatch.setenv("SPEECH_HANDS_SHARED_DATA", str(shared_data))
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["eval", "run", "librispeech-dev", "--limit", "1", "--out", str(out), "--no-plots", "--no-label-rewrite"]
    result = runner.invoke(app, [*args, "--policy", "confidence"])
    assert result.exit_code == 0, result.output
    (item,) = load_results(out / "results.jsonl")
    trace = runner.invoke(app, ["trace", item.thread_id, "--json", "--trace-db", str(out / "traces.sqlite")])
    assert json.loads(trace.output)["result"]["reflection"]["policy"] == "confidence-baseline"
    assert json.loads((out / "run.json").read_text())["settings"]["policy"] == "confidence"
    assert json.loads((out / "report.json").read_text())["run_settings"]["policy"] == "confidence"
    assert "policy=confidence" in (out / "report.md").read_text()  # the report says which agent made it
    learned = runner.invoke(app, args)  # the default (learned) policy into the same folder: refused
    assert learned.exit_code != 0 and "other settings" in str(learned.exception)


def test_compare_two_runs_item_by_item(shared_data, tmp_path):
    """`eval compare`: two replayed runs whose agents keep different recorded systems (the policy
    keeps the internal one), so their WERs are those systems' WERs, checked independently."""
    from doubles import CountingRewriter, ScriptedPolicy

    from speech_hands.cli import app
    from speech_hands.evals.compare import compare_runs
    from speech_hands.types import Action

    manifest = librispeech_dev(shared_data)
    for folder, internal in (("a", "b2.b1+nnlm"), ("b", INTERNAL)):
        store = replay_from_systems(manifest, internal, [EXTERNAL])
        keep = ScriptedPolicy([Action.INTERNAL])
        with SpeechHands.from_replay(
            store, internal_name=internal, policy=keep, rewriter=CountingRewriter(), trace_db=":memory:"
        ) as agent:
            run_manifest(agent, manifest, tmp_path / folder / "results.jsonl", show_progress=False)
    c = compare_runs(tmp_path / "a", tmp_path / "b")
    refs = [normalize_english(i.reference) for i in manifest]
    for system, wer in (("b2.b1+nnlm", c.wer_a), (INTERNAL, c.wer_b)):
        assert wer == pytest.approx(jiwer.wer(refs, [normalize_english(i.systems[system]) for i in manifest]))
    assert c.items == 60 and c.a_better + c.b_better + c.same == 60 and c.a_better > c.b_better
    items, speakers = c.intervals
    assert items.estimate == pytest.approx(1 - c.errors_a / c.errors_b) and items.low < items.estimate < items.high
    assert speakers.clusters == 6

    result = CliRunner().invoke(
        app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c.json")]
    )
    assert result.exit_code == 0, result.output
    assert "60 common items" in result.output and "resampling speakers" in result.output
    assert json.loads((tmp_path / "c.json").read_text())["errors_a"] == c.errors_a

    # items are matched by id: a run over other items cannot be compared
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.jsonl").write_text(
        (tmp_path / "b" / "results.jsonl").read_text().replace('"id": "', '"id": "x-').replace('"id":"', '"id":"x-')
    )
    with pytest.raises(ConfigurationError, match="no item in common"):
        compare_runs(tmp_path / "a", tmp_path / "other")


def test_paper_nbest_file_becomes_a_replayable_manifest(tmp_path, shared_data):
    from speech_hands.cli import app

    uids = ["533-1066-0000", "1688-142285-0000"]
    audio_root = shared_data / "librispeech_other_dev"
    refs = {i.id: i.reference for i in librispeech_dev(shared_data)}
    nbest = tmp_path / "librispeech_test_other_parakeet_5_best.jsonl"
    _write_lines(
        nbest,
        [
            {
                "audio": str(audio_root / u.split("-")[0] / f"{u}.flac"),
                "gold": refs[u],
                "parakeet_nbest": [refs[u].upper(), "noise"],
            }
            for u in uids
        ],
    )
    (tmp_path / "own.tsv").write_text(f"{uids[0]}\tnow don t force him\n{uids[1]}\tthere is iron\n")
    out = tmp_path / "imported"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "import-nbest",
            str(nbest),
            "--root",
            str(audio_root),
            "--out",
            str(out),
            "--internal",
            str(tmp_path / "own.tsv"),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(out / "manifest.jsonl", root=audio_root)
    assert [i.id for i in manifest] == uids and manifest.items[0].dataset == "librispeech_test_other_parakeet"
    assert manifest.audio_path(manifest.items[0]).exists()
    from speech_hands.backends.replay import ReplayStore

    store = ReplayStore.from_jsonl(out / "replay.jsonl")
    assert store.external_tools == ["parakeet"] and store.get(uids[1]).internal[0].text == "there is iron"
    with SpeechHands.from_replay(store, trace_db=":memory:") as agent:
        results = run_manifest(agent, manifest, tmp_path / "r.jsonl", show_progress=False)
    assert all(r.error is None and {c.tool for c in r.candidates} == {"internal", "parakeet"} for r in results)


def test_audioqa_report_over_the_papers_recorded_cases(shared_data, tmp_path):
    """The paper's 7 recorded DCASE cases, replayed: accuracy per system and category, gold actions."""
    from speech_hands.backends.replay import ReplayStore, records_from_demo_cases

    cases = json.loads((shared_data / "speech_hands_demo_cases.json").read_text())["audio_qa"]
    items = [
        ManifestItem(
            id=c["id"],
            question=c["question"],
            choices=c["choices"],
            answer=c["gold_answer"],
            dataset="dcase2025-dev",
            category="bio" if i < 4 else "scape",
        )
        for i, c in enumerate(cases)
    ]
    manifest = Manifest(items, tmp_path, name="dcase-demo")
    store = ReplayStore(
        [r for r in records_from_demo_cases(shared_data / "speech_hands_demo_cases.json") if r.question]
    )
    with SpeechHands.from_replay(store, question_answering=True, trace_db=":memory:") as agent:
        results = run_manifest(agent, manifest, tmp_path / "r.jsonl", show_progress=False)
    report = write_report(results, tmp_path / "out", name="dcase-demo")
    assert report.task == "qa"
    assert report.system("internal: internal").accuracy == pytest.approx(3 / 7)
    assert report.system("external: Audio Flamingo 3").accuracy == pytest.approx(3 / 7)
    assert report.system("best-of-two (per-item oracle, no rewrite)").accuracy == pytest.approx(6 / 7)
    assert report.routing.gold_distribution == {"internal": 3, "external": 3, "rewrite": 1}
    cats = {c.category: c for c in report.system("internal: internal").per_category}
    assert set(cats) == {"bio", "scape"} and cats["bio"].total == 4
    assert "accuracy %" in (tmp_path / "out" / "report.md").read_text()
