"""Resuming an `eval run`: what a resumed run keeps (predictions) and what it always takes from the
manifest (references), failed items retried, changed audio redone, and a half-written last line
from a crash repaired instead of having the next record glued onto it. Replay agents: no model."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import dev_flac

from speech_hands import SpeechHands
from speech_hands.backends.replay import ReplayRecord, ReplayStore
from speech_hands.datasets.builtin import librispeech_dev, replay_from_systems
from speech_hands.datasets.manifest import Manifest, ManifestItem
from speech_hands.evals.runner import load_results, run_manifest

INTERNAL, EXTERNAL = "b1.rnnt_baseline", "s4.s3+nnlm.biasing_100"


def _run(manifest: Manifest, store: ReplayStore, path: Path, **kwargs):
    with SpeechHands.from_replay(store, internal_name=INTERNAL, trace_db=":memory:") as agent:
        return run_manifest(agent, manifest, path, show_progress=False, **kwargs)


def test_a_corrected_reference_is_scored_on_resume(shared_data, tmp_path):
    manifest = librispeech_dev(shared_data).select(limit=4)
    store = replay_from_systems(manifest, INTERNAL, [EXTERNAL])
    path = tmp_path / "results.jsonl"
    _run(manifest, store, path)
    first = manifest.items[0]
    corrected = Manifest(
        [first.model_copy(update={"reference": "a corrected reference"}), *manifest.items[1:]], manifest.root
    )
    ran: list[str] = []
    results = _run(corrected, store, path, on_result=lambda r: ran.append(r.id))
    assert ran == []  # predictions are kept ...
    assert results[0].reference == "a corrected reference"  # ... references come from the manifest
    assert load_results(path)[0].reference == "a corrected reference"  # and the file says the same


def test_failed_items_are_retried_on_resume(tmp_path):
    manifest = Manifest([ManifestItem(id="u1", audio="u1.flac", reference="hello world")], tmp_path)
    store = ReplayStore([ReplayRecord(id="u1", internal=["hello world"], external={"x": ["hello word"]})])
    path = tmp_path / "results.jsonl"
    (failed,) = _run(manifest, store, path)  # the audio file does not exist yet
    assert failed.error and "AudioError" in failed.error
    shutil.copy(dev_flac("1688-142285-0009"), tmp_path / "u1.flac")
    (retried,) = _run(manifest, store, path)
    assert retried.error is None and retried.prediction == "hello world"
    assert [r.error for r in load_results(path)] == [None]


def test_changed_audio_is_run_again(tmp_path):
    manifest = Manifest([ManifestItem(id="u1", audio="u1.flac", reference="hello world")], tmp_path)
    store = ReplayStore([ReplayRecord(id="u1", internal=["hello world"], external={"x": ["hello word"]})])
    path = tmp_path / "results.jsonl"
    shutil.copy(dev_flac("1688-142285-0009"), tmp_path / "u1.flac")
    (first,) = _run(manifest, store, path)
    ran: list[str] = []
    _run(manifest, store, path, on_result=lambda r: ran.append(r.id))
    assert ran == []  # same audio: kept
    shutil.copy(dev_flac("1688-142285-0000"), tmp_path / "u1.flac")
    (again,) = _run(manifest, store, path, on_result=lambda r: ran.append(r.id))
    assert ran == ["u1"] and again.audio_sha256 != first.audio_sha256


def test_a_half_written_last_line_is_repaired_not_glued_onto(shared_data, tmp_path):
    manifest = librispeech_dev(shared_data).select(limit=5)
    store = replay_from_systems(manifest, INTERNAL, [EXTERNAL])
    path = tmp_path / "results.jsonl"
    _run(Manifest(manifest.items[:4], manifest.root), store, path)
    with path.open("a") as fh:  # a crash in the middle of writing the fifth record
        fh.write('{"id": "' + manifest.items[4].id + '", "task": "a')
    _run(manifest, store, path)
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and [r.id for r in load_results(path)] == [i.id for i in manifest]
