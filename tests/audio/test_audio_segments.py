"""Segments of a long input: views into the whole input, served by the store, reloadable from the file."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import dev_flac, write_wav

from speech_hands.audio import AudioStore, audio_from_array, audio_segment, load_audio
from speech_hands.types import AudioRef

UTTS = ["2609-156975-0007", "3331-159605-0008"]


@pytest.fixture(scope="module")
def long_file(tmp_path_factory, shared_data):
    samples = np.concatenate([load_audio(dev_flac(u)).samples for u in UTTS])
    return write_wav(tmp_path_factory.mktemp("long") / "long.wav", samples)


def test_a_segment_is_a_view_with_offsets_and_its_own_hash(long_file):
    whole = load_audio(long_file)
    seg = audio_segment(whole, 16_000 * 10, 16_000 * 25, 3)
    assert np.shares_memory(seg.samples, whole.samples)  # no copy of the samples
    assert seg.ref.start_s == 10.0 and seg.ref.end_s == 25.0 and seg.ref.duration_s == 15.0
    assert seg.ref.source_sha256 == whole.ref.sha256 and seg.ref.sha256 != whole.ref.sha256
    assert seg.ref.path == whole.ref.path and seg.ref.id == f"{whole.ref.id}#3" and seg.ref.is_segment


def test_the_store_slices_segments_from_the_whole_input_and_reloads_it(long_file):
    whole = load_audio(long_file)
    seg = audio_segment(whole, 16_000 * 5, 16_000 * 17, 1)
    store = AudioStore()
    store.put(whole)
    store.put(seg)  # never stored on its own: it would evict the whole input it is a view of
    assert len(store._items) == 1
    assert np.array_equal(store.get(seg.ref).samples, seg.samples)
    # another process (an empty store): the whole file is reloaded, checked, and cut again
    fresh = AudioStore().get(AudioRef.model_validate(seg.ref.model_dump(mode="json")))
    assert np.array_equal(fresh.samples, seg.samples)


def test_whole_input_references_serialise_without_segment_fields(long_file):
    """Traces of inputs that were not cut keep exactly the keys they always had."""
    ref = load_audio(long_file).ref
    assert set(ref.model_dump(mode="json")) == {
        "id",
        "path",
        "sha256",
        "duration_s",
        "sample_rate",
        "channels",
        "silent",
    }
    seg = audio_segment(load_audio(long_file), 0, 16_000, 0).ref
    assert {"start_s", "end_s", "source_sha256"} <= set(seg.model_dump(mode="json"))
    assert AudioRef.model_validate(seg.model_dump(mode="json")) == seg


def test_the_store_keeps_a_byte_budget_but_always_the_latest_input():
    store = AudioStore(max_bytes=16_000 * 4 * 50)  # 50 s of samples
    inputs = [audio_from_array(np.full(16_000 * 30, 0.1 * (i + 1), np.float32), 16_000) for i in range(3)]
    for audio in inputs:
        store.put(audio)
    assert list(store._items) == [inputs[2].ref.sha256]  # two 30 s inputs are over the budget: the older goes
    big = audio_from_array(np.full(16_000 * 80, 0.5, np.float32), 16_000)
    store.put(big)  # over the budget on its own: still kept, as the latest
    assert list(store._items) == [big.ref.sha256]
