"""The NeMo backend on a tiny random Parakeet-style TDT transducer (FastConformer encoder, TDT joint,
SentencePiece BPE trained offline), saved as a real .nemo archive and restored through the backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_models import corpus, require

sentencepiece = require("sentencepiece")


@pytest.fixture(scope="module", autouse=True)
def _nemo_home(tmp_path_factory):
    """NeMo's import writes ~/.lhotse and caches under ~: keep them in the test's temp dir."""
    home = tmp_path_factory.mktemp("nemo-home")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    yield
    if old is not None:
        os.environ["HOME"] = old


def build_tiny_tdt(directory: Path, shared_data: Path) -> Path:
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    sp_dir = directory / "tokenizer"
    sp_dir.mkdir(parents=True)
    (sp_dir / "text.txt").write_text("\n".join(t.lower() for t in corpus(shared_data)[:60]))
    sentencepiece.SentencePieceTrainer.train(
        input=str(sp_dir / "text.txt"),
        model_prefix=str(sp_dir / "tokenizer"),
        vocab_size=64,
        model_type="bpe",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        minloglevel=2,
    )
    sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_dir / "tokenizer.model"))
    (sp_dir / "vocab.txt").write_text("\n".join(sp.id_to_piece(i) for i in range(sp.get_piece_size())) + "\n")
    durations = [0, 1, 2, 3, 4]
    cfg = OmegaConf.create(
        {
            "sample_rate": 16000,
            "tokenizer": {"dir": str(sp_dir), "type": "bpe"},
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "sample_rate": 16000,
                "normalize": "per_feature",
                "window_size": 0.025,
                "window_stride": 0.01,
                "features": 80,
                "n_fft": 512,
                "dither": 0.0,
                "pad_to": 0,
            },
            "encoder": {
                "_target_": "nemo.collections.asr.modules.ConformerEncoder",
                "feat_in": 80,
                "n_layers": 1,
                "d_model": 32,
                "subsampling": "dw_striding",
                "subsampling_factor": 8,
                "subsampling_conv_channels": 32,
                "n_heads": 2,
                "ff_expansion_factor": 2,
                "conv_kernel_size": 9,
                "self_attention_model": "rel_pos",
                "xscaling": True,
            },
            "decoder": {
                "_target_": "nemo.collections.asr.modules.RNNTDecoder",
                "normalization_mode": None,
                "random_state_sampling": False,
                "blank_as_pad": True,
                "prednet": {"pred_hidden": 32, "pred_rnn_layers": 1},
            },
            "joint": {
                "_target_": "nemo.collections.asr.modules.RNNTJoint",
                "log_softmax": None,
                "preserve_memory": False,
                "fuse_loss_wer": False,
                "num_extra_outputs": len(durations),
                "jointnet": {"joint_hidden": 32, "activation": "relu", "encoder_hidden": 32, "pred_hidden": 32},
            },
            "model_defaults": {
                "enc_hidden": 32,
                "pred_hidden": 32,
                "joint_hidden": 32,
                "tdt_durations": durations,
                "num_tdt_durations": len(durations),
            },
            "decoding": {
                "strategy": "greedy_batch",
                "model_type": "tdt",
                "durations": durations,
                "greedy": {"max_symbols": 10},
            },
            "loss": {
                "loss_name": "tdt",
                "tdt_kwargs": {
                    "fastemit_lambda": 0.0,
                    "clamp": -1.0,
                    "durations": durations,
                    "sigma": 0.02,
                    "omega": 0.1,
                },
            },
        }
    )
    torch.manual_seed(0)
    model = EncDecRNNTBPEModel(cfg=cfg)
    path = directory / "parakeet-tdt-tiny-random.nemo"
    model.save_to(str(path))
    return path


@pytest.fixture(scope="module")
def nemo_file(tmp_path_factory, shared_data) -> Path:
    require("nemo")
    return build_tiny_tdt(tmp_path_factory.mktemp("nemo"), shared_data)


@pytest.fixture(scope="module")
def audio():
    from conftest import dev_flac

    from speech_hands.audio import load_audio

    return load_audio(dev_flac("1688-142285-0007"))


def test_restore_from_nemo_file_and_beam_nbest(nemo_file, audio):
    from speech_hands.backends.nemo import NemoASR

    asr = NemoASR(str(nemo_file), device="cpu", beam_size=4)
    hyps = asr.transcribe(audio, n_best=4)
    assert asr.load().extras["family"] == "transducer" and asr.n_best_supported
    assert 1 < len(hyps) <= 4
    assert [h.rank for h in hyps] == list(range(len(hyps))) and len({h.text for h in hyps}) == len(hyps)
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    assert asr.name == "parakeet-tdt-tiny-random"
    batch = asr.transcribe_batch([audio, audio], n_best=2)
    assert len(batch) == 2 and [h.text for h in batch[0]] == [h.text for h in batch[1]]


def test_batched_beam_and_greedy_strategies(nemo_file, audio):
    from speech_hands.backends.nemo import NemoASR

    fast = NemoASR(str(nemo_file), device="cpu", strategy="malsd_batch", beam_size=4, name="fast")
    assert fast.n_best_supported and 1 < len(fast.transcribe(audio, n_best=4)) <= 4
    greedy = NemoASR(str(nemo_file), device="cpu", strategy="greedy_batch", name="greedy")
    assert not greedy.n_best_supported and len(greedy.transcribe(audio, n_best=4)) == 1


def test_missing_nemo_file(tmp_path):
    from speech_hands.backends.nemo import NemoASR
    from speech_hands.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not found"):
        NemoASR(str(tmp_path / "absent.nemo"), device="cpu").load()


def test_parakeet_as_the_external_tool_in_the_graph(nemo_file, tmp_path):
    from conftest import dev_flac

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
