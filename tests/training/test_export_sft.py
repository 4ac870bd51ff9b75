"""``speech-hands export-sft``: gold labels of a real replayed run (LibriSpeech dev, 7 recorded
systems) become ShareGPT records that LLaMA-Factory reads and the project's own records, with the
N-best size, audio, balancing and speaker-disjoint options doing what they say, and bad labels
refused with the file and line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speech_hands import SpeechHands
from speech_hands.cli import app
from speech_hands.datasets.builtin import librispeech_dev, replay_from_systems
from speech_hands.errors import ConfigurationError
from speech_hands.evals.runner import run_manifest
from speech_hands.metrics.labels import LabelRule
from speech_hands.training.export import ExportOptions, export_sft, read_labels
from speech_hands.training.supervision import write_supervision

INTERNAL = "b1.rnnt_baseline"
EXTERNALS = ["s4.s3+nnlm.biasing_100", "s5.s3+db-nnlm.biasing_100"]


@pytest.fixture(scope="module")
def labels_dir(shared_data, tmp_path_factory) -> Path:
    manifest = librispeech_dev(shared_data).select(limit=30)  # 3 speakers x 10
    folder = tmp_path_factory.mktemp("labels")
    store = replay_from_systems(manifest, INTERNAL, EXTERNALS)
    with SpeechHands.from_replay(store, internal_name=INTERNAL, trace_db=":memory:") as agent:
        results = run_manifest(agent, manifest, folder / "results.jsonl", show_progress=False)
    write_supervision(results, folder, LabelRule())
    return folder


def _load(folder: Path, name: str):
    return json.loads((folder / name).read_text())


def test_sharegpt_records_and_dataset_info(labels_dir, tmp_path):
    summary = export_sft(labels_dir, tmp_path, ExportOptions())
    info = _load(tmp_path, "dataset_info.json")
    entry = info["speech_hands_sft_train"]
    assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages", "audios": "audios"}
    assert entry["tags"]["role_tag"] == "role" and entry["tags"]["assistant_tag"] == "assistant"
    records = _load(tmp_path, entry["file_name"])
    assert len(records) == 30 == summary["counts"]["train"]["records"]
    labels = {i.id: i for i in read_labels(labels_dir)}
    own = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    for record, mine in zip(records, own):
        user, assistant = record["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert user["content"].count("<audio>") == len(record["audios"]) == 1 and Path(record["audios"][0]).is_file()
        item = labels[mine["id"]]
        assert assistant["content"] == f"<{item.label.action.value}>{item.gold}"  # ASR: no space after the token
        for hyps in item.externals.values():
            assert all(h in user["content"] for h in hyps[:5])


def test_n_best_and_no_audio(labels_dir, tmp_path):
    export_sft(labels_dir, tmp_path, ExportOptions(n_best=1, audio=False))
    info = _load(tmp_path, "dataset_info.json")["speech_hands_sft_train"]
    assert info["columns"] == {"messages": "messages"}
    records = _load(tmp_path, info["file_name"])
    labels = read_labels(labels_dir)
    for record, item in zip(records, labels):
        content = record["messages"][0]["content"]
        assert "audios" not in record and "<audio>" not in content
        listed = content.split("External hypotheses:\n")[1].split("\n\n")[0].splitlines()
        assert listed == [f"{i + 1}. {hyps[0]}" for i, hyps in enumerate(item.externals.values())]


def test_speaker_disjoint_split_and_oversampling(labels_dir, tmp_path):
    options = ExportOptions(test_speakers=0.34, balance="oversample", max_ratio=3.0, seed=1)
    summary = export_sft(labels_dir, tmp_path, options)
    rows = {s: [json.loads(x) for x in (tmp_path / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "test")}
    train_speakers, test_speakers = ({r["speaker"] for r in rows[s]} for s in ("train", "test"))
    assert len(test_speakers) == 1 and not train_speakers & test_speakers
    assert len(rows["test"]) == 10 and len({r["id"] for r in rows["test"]}) == 10  # test is never oversampled
    plain = Counter(i.label.action.value for i in read_labels(labels_dir) if i.speaker in train_speakers)
    balanced = Counter(r["action"] for r in rows["train"])
    largest = max(plain.values())
    for action, count in plain.items():
        assert balanced[action] == min(largest, 3 * count)
    assert summary["counts"]["train"]["actions"] == dict(balanced)
    again = tmp_path / "again"
    export_sft(labels_dir, again, options)
    assert (again / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()  # seeded


def test_bad_labels_are_refused_with_file_and_line(labels_dir, tmp_path):
    lines = (labels_dir / "labels.jsonl").read_text().splitlines()
    broken = tmp_path / "broken"
    broken.mkdir()
    bad = json.loads(lines[1])
    bad["label"]["action"] = "maybe"
    (broken / "labels.jsonl").write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
    with pytest.raises(ConfigurationError, match=r"labels.jsonl:2: not a labelled item \(label.action"):
        export_sft(broken, tmp_path / "out")
    (broken / "labels.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ConfigurationError, match=r"labels.jsonl:2"):
        export_sft(broken, tmp_path / "out")
    moved = json.loads(lines[0])
    moved["audio"] = str(tmp_path / "gone.flac")
    (broken / "labels.jsonl").write_text(json.dumps(moved) + "\n")
    with pytest.raises(ConfigurationError, match="audio file not found"):
        export_sft(broken, tmp_path / "out")
    export_sft(broken, tmp_path / "text-only", ExportOptions(audio=False))  # text only needs no audio


def test_the_command(labels_dir, tmp_path):
    result = CliRunner().invoke(app, ["export-sft", str(labels_dir), "--out", str(tmp_path), "--n-best", "1"])
    assert result.exit_code == 0, result.output
    assert "train: 30 records, 3 speakers" in result.output
    assert (tmp_path / "dataset_info.json").is_file() and (tmp_path / "export.json").is_file()
