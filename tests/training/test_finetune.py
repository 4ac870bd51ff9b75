"""``speech-hands finetune``: export-sft records of a real replayed run (LibriSpeech dev) fine-tune the
action-token Whisper (tiny.en here: the cheapest), and the checkpoint is the agent's reflection; the
loss falls when overfitting, a killed run resumes to the same weights, and bad input is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import dev_flac
from typer.testing import CliRunner

from speech_hands import SpeechHands
from speech_hands.audio import load_audio
from speech_hands.backends.action_whisper import ActionWhisperReflector
from speech_hands.cli import app
from speech_hands.datasets.builtin import librispeech_dev, replay_from_systems
from speech_hands.errors import ConfigurationError
from speech_hands.evals.runner import run_manifest
from speech_hands.metrics.labels import LabelRule
from speech_hands.reflection.base import ReflectionInput
from speech_hands.training.finetune import FinetuneSettings, finetune, read_records
from speech_hands.training.supervision import write_supervision
from speech_hands.types import ACTION_TOKENS

INTERNAL = "b1.rnnt_baseline"
EXTERNALS = ["s4.s3+nnlm.biasing_100", "s5.s3+db-nnlm.biasing_100"]
IDS = ["1688-142285-0002", "1688-142285-0004", "1688-142285-0005", "1688-142285-0007"]
IDS += ["1998-15444-0001", "1998-15444-0003"]
TINY = "bundled:tiny.en"


@pytest.fixture(scope="module")
def sft_dir(shared_data, tmp_path_factory) -> Path:
    manifest = librispeech_dev(shared_data).select(ids=IDS)
    folder = tmp_path_factory.mktemp("labels")
    store = replay_from_systems(manifest, INTERNAL, EXTERNALS)
    with SpeechHands.from_replay(store, internal_name=INTERNAL, trace_db=":memory:") as agent:
        results = run_manifest(agent, manifest, folder / "results.jsonl", show_progress=False)
    write_supervision(results, folder, LabelRule())
    result = CliRunner().invoke(
        app, ["export-sft", str(folder), "--out", str(folder / "sft"), "--test-speakers", "0.5"]
    )
    assert result.exit_code == 0, result.output
    return folder / "sft"


@pytest.fixture(scope="module")
def states(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("states")


@pytest.fixture(scope="module")
def checkpoint(sft_dir, states, tmp_path_factory) -> Path:
    """`speech-hands finetune --model bundled:tiny.en --max-steps 2` on the exported records."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny-actions"
    args = ["finetune", "--data", str(sft_dir), "--model", TINY, "--out", str(out), "--max-steps", "2"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "2", "--states-dir", str(states)])
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output and "held_out" in result.output
    return out


def test_checkpoint_and_metrics(checkpoint):
    for name in ("model.pt", "reflector.json", "tokenizer.json", "gpt2.tiktoken", "metrics.json"):
        assert (checkpoint / name).is_file(), name
    assert not (checkpoint / "training").exists()  # the optimizer state goes once the run is done
    info = json.loads((checkpoint / "reflector.json").read_text())
    assert info["action_tokens"] == {"<internal>": 51864, "<external>": 51865, "<rewrite>": 51866}
    assert info["source"]["model"] == TINY and len(info["source"]["sha256"]) == 64
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    assert len(metrics["curve"]["loss"]) == len(metrics["curve"]["action_loss"]) == 2 and metrics["step_time_s"] > 0
    held = metrics["held_out"]
    assert (
        held["items"] >= 2
        and 0 <= held["accuracy"] <= 1
        and set(held["per_action"]) == {"internal", "external", "rewrite"}
    )
    assert {"routed", "internal", "external"} <= set(held["wer"])


def test_transcribe_routes_on_the_checkpoints_own_first_token(checkpoint):
    flac = dev_flac("1688-142285-0000")
    args = ["transcribe", str(flac), "--json", "--reflector", str(checkpoint), "--internal-model", TINY]
    result = CliRunner().invoke(app, [*args, "--external-model", "bundled:base", "--trace-db", ":memory:"])
    assert result.exit_code == 0, result.output
    out = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    reflection = out["reflection"]
    assert reflection["policy"].startswith(f"action-whisper:{checkpoint.name}@")
    assert reflection["raw_token"] in ACTION_TOKENS and reflection["raw_token"] == f"<{reflection['action']}>"
    assert sum(reflection["probs"].values()) == pytest.approx(1.0)
    assert reflection["action"] == max(reflection["probs"], key=reflection["probs"].get)
    # the same first token, computed directly from the checkpoint on the same candidates
    from speech_hands.types import ToolOutput

    outputs = [ToolOutput.model_validate(o) for o in out["candidates"]]
    inp = ReflectionInput(
        audio=load_audio(flac),
        question=None,
        internal=next(o for o in outputs if o.role == "internal"),
        externals=[o for o in outputs if o.role == "external"],
    )
    first, _ = ActionWhisperReflector(checkpoint).first_token(inp)
    for action, p in first.probs().items():
        assert reflection["probs"][action.value] == pytest.approx(p, abs=1e-6)


def test_refused_checkpoints_name_the_fix(checkpoint, tmp_path):
    with pytest.raises(ConfigurationError, match=r"fine-tuned from bundled:tiny.en .*--internal-model bundled:tiny.en"):
        SpeechHands.default(internal_model="bundled:base", reflector=checkpoint)
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copyfile(checkpoint / "model.pt", plain / "model.pt")
    with pytest.raises(ConfigurationError, match=r"without the action tokens.*speech-hands finetune"):
        SpeechHands.default(internal_model=TINY, reflector=plain)
    stripped = tmp_path / "stripped"
    shutil.copytree(checkpoint, stripped)
    info = json.loads((stripped / "reflector.json").read_text())
    del info["action_tokens"]["<rewrite>"]
    (stripped / "reflector.json").write_text(json.dumps(info))
    with pytest.raises(ConfigurationError, match=r"lacks the action tokens \['<rewrite>'\].*finetune"):
        SpeechHands.default(internal_model=TINY, reflector=stripped)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_loss_falls_when_overfitting(sft_dir, states, tmp_path, lora):
    lr = 3e-3 if lora else 1e-4
    settings = FinetuneSettings(model=TINY, epochs=50, max_steps=4, batch_size=4, lr=lr, warmup=0.0, lora=lora)
    metrics = finetune(sft_dir, tmp_path / "ck", settings, states_dir=states, show_progress=False)
    loss, action = metrics["curve"]["loss"], metrics["curve"]["action_loss"]
    assert loss[-1] < 0.5 * loss[0] and action[-1] < 0.5 * action[0], metrics["curve"]
    if lora:  # the adapters are merged: the checkpoint is a plain Whisper with the action tokens
        state = torch.load(tmp_path / "ck" / "model.pt", weights_only=True)["model_state_dict"]
        assert not any("lora" in k for k in state) and state["decoder.token_embedding.weight"].shape[0] == 51867


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_result(sft_dir, states, tmp_path):
    settings = FinetuneSettings(model=TINY, epochs=3, max_steps=4, batch_size=2, lr=1e-4)
    common = {"states_dir": states, "show_progress": False, "save_every": 1}
    straight = finetune(sft_dir, tmp_path / "straight", settings, **common)

    def kill(step: int, loss: float) -> None:
        if step == 3:  # mid-epoch, after the state of step 3 was saved
            raise Killed

    with pytest.raises(Killed):
        finetune(sft_dir, tmp_path / "killed", settings, on_step=kill, **common)
    with pytest.raises(ConfigurationError, match="holds a training run; pass --resume"):
        finetune(sft_dir, tmp_path / "killed", settings, **common)
    other = settings.model_copy(update={"lr": 2e-4})
    with pytest.raises(ConfigurationError, match=r"other settings \(lr: 0.0001 -> 0.0002\)"):
        finetune(sft_dir, tmp_path / "killed", other, resume=True, **common)
    resumed = finetune(sft_dir, tmp_path / "killed", settings, resume=True, **common)
    assert resumed["curve"] == straight["curve"]
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model_state_dict"]
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["model_state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_sft_input_is_refused_with_file_and_line(sft_dir, tmp_path):
    lines = (sft_dir / "train.jsonl").read_text().splitlines()
    bad = tmp_path / "train.jsonl"

    def refused(second: dict | str, pattern: str) -> None:
        text = second if isinstance(second, str) else json.dumps(second)
        bad.write_text("\n".join([lines[0], text]) + "\n")
        with pytest.raises(ConfigurationError, match=pattern):
            read_records(bad)

    record = json.loads(lines[1])
    refused("{not json", r"train.jsonl:2: not an export-sft record")
    refused(record | {"action": "maybe"}, r"train.jsonl:2: not an export-sft record \(action")
    refused(record | {"audio": str(tmp_path / "gone.flac")}, r"train.jsonl:2: audio file not found")
    refused(record | {"audio": None}, r"train.jsonl:2: no audio")
    refused(record | {"target": "hello"}, r"train.jsonl:2: the target does not start")
    refused({k: v for k, v in record.items() if k != "externals"}, r"train.jsonl:2: .*re-export")
    result = CliRunner().invoke(app, ["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, ConfigurationError) and "train.jsonl:2" in str(result.exception)


def test_other_models_are_not_supported_yet(sft_dir, tmp_path):
    for model in ("Qwen/Qwen2.5-0.5B-Instruct", "bundled:small"):
        with pytest.raises(ConfigurationError, match=r"not supported yet|no bundled model"):
            finetune(sft_dir, tmp_path / "o", FinetuneSettings(model=model))
