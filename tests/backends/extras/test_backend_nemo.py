"""The NeMo backend on a tiny random Parakeet-style TDT transducer (FastConformer encoder, TDT joint,
SentencePiece BPE trained offline), saved as a real .nemo archive and restored through the backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_models import build_tiny_tdt, require


@pytest.fixture(scope="module", autouse=True)
def _nemo_home(tmp_path_factory):
    """NeMo's import writes ~/.lhotse and caches under ~: keep them in the test's temp dir."""
    home = tmp_path_factory.mktemp("nemo-home")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    yield
    if old is not None:
        os.environ["HOME"] = old


@pytest.fixture(scope="module")
def nemo_file(tmp_path_factory, shared_data) -> Path:
    require("nemo")
    return build_tiny_tdt(tmp_path_factory.mktemp("nemo"), shared_data)


@pytest.fixture(scope="module")
def audio():
    from helpers import dev_flac

    from speech_hands.audio import load_audio

    return load_audio(dev_flac("1688-142285-0007"))


def test_restore_from_nemo_file_and_beam_nbest(nemo_file, audio):
    from speech_hands.backends.nemo import NemoASR

    asr = NemoASR(str(nemo_file), device="cpu", beam_size=4)
    hyps = asr.transcribe(audio, n_best=4)
    assert asr.load().extras["family"] == "transducer" and asr.n_best_supported
    assert 1 < len(hyps) <= 4  # ranks and scores: test_backend_contract.py
    assert asr.name == "parakeet-tdt-tiny-random"
    batch = asr.transcribe_batch([audio, audio], n_best=2)
    assert len(batch) == 2 and [h.text for h in batch[0]] == [h.text for h in batch[1]]


def test_batched_beam_and_greedy_strategies(nemo_file, audio):
    from speech_hands.backends.nemo import NemoASR

    fast = NemoASR(str(nemo_file), device="cpu", strategy="malsd_batch", beam_size=4, name="fast")
    assert fast.n_best_supported and 1 < len(fast.transcribe(audio, n_best=4)) <= 4
    greedy = NemoASR(str(nemo_file), device="cpu", strategy="greedy_batch", name="greedy")
    assert not greedy.n_best_supported and len(greedy.transcribe(audio, n_best=4)) == 1


def test_parakeet_as_the_external_tool_in_the_graph(nemo_file, tmp_path):
    from helpers import dev_flac

    from speech_hands import SpeechHands

    agent = SpeechHands.from_config(
        {
            "agent": {"trace_db": str(tmp_path / "t.sqlite"), "n_best": 3},
            "omni": {
                "kind": "embedded",
                "predictor": {"kind": "faster-whisper", "model": "bundled:tiny.en", "cpu_threads": 2},
            },
            "external": [{"kind": "nemo", "model": str(nemo_file), "device": "cpu", "name": "parakeet"}],
        }
    )
    with agent:
        result = agent.invoke(dev_flac("1688-142285-0007"))
    parakeet = next(c for c in result.candidates if c.tool == "parakeet")
    assert parakeet.ok and 1 <= len(parakeet.hypotheses) <= 3
    assert result.action is not None
