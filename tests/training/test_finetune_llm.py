"""``speech-hands finetune --model DIR --lora`` for the text reflector LLM, on a tiny random Qwen2 chat
model (tests/tiny_models.py) and the export-sft records of a real replayed run (LibriSpeech dev): the
action tokens are added with rows from existing words, the loss falls when overfitting, a killed run
resumes to the same weights, and the checkpoint reflects in the agent on its own first token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speech_hands import SpeechHands
from speech_hands.cli import app
from speech_hands.datasets.builtin import librispeech_dev, replay_from_systems
from speech_hands.errors import ConfigurationError
from speech_hands.evals.runner import run_manifest
from speech_hands.metrics.labels import LabelRule
from speech_hands.training.finetune import FinetuneSettings
from speech_hands.training.supervision import write_supervision
from speech_hands.types import ACTION_TOKENS

pytestmark = pytest.mark.extras

INTERNAL = "b1.rnnt_baseline"
EXTERNALS = ["s4.s3+nnlm.biasing_100", "s5.s3+db-nnlm.biasing_100"]
IDS = ["1688-142285-0002", "1688-142285-0004", "1688-142285-0005", "1688-142285-0007"]
IDS += ["1998-15444-0001", "1998-15444-0003"]


@pytest.fixture(scope="module")
def sft_dir(shared_data, tmp_path_factory) -> Path:
    manifest = librispeech_dev(shared_data).select(ids=IDS)
    folder = tmp_path_factory.mktemp("labels")
    store = replay_from_systems(manifest, INTERNAL, EXTERNALS)
    with SpeechHands.from_replay(store, internal_name=INTERNAL, trace_db=":memory:") as agent:
        results = run_manifest(agent, manifest, folder / "results.jsonl", show_progress=False)
    write_supervision(results, folder, LabelRule())
    args = ["export-sft", str(folder), "--out", str(folder / "sft"), "--no-audio", "--test-speakers", "0.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return folder / "sft"


@pytest.fixture(scope="module")
def tiny_llm(shared_data, tmp_path_factory) -> Path:
    from tiny_models import build_chat_llm

    return build_chat_llm(tmp_path_factory.mktemp("tiny-qwen2"), shared_data, action_tokens=False)


def _settings(model: Path, **kw) -> FinetuneSettings:
    return FinetuneSettings(model=str(model), **{"lora": True, "batch_size": 2, **kw})


def test_action_tokens_start_from_the_words_they_name(tiny_llm) -> None:
    import torch

    from speech_hands.backends.llm_weights import load_causal_lm
    from speech_hands.training.finetune_llm import add_action_tokens

    model, tokenizer = load_causal_lm(str(tiny_llm), device="cpu", dtype="float32")
    ids = add_action_tokens(model, tokenizer)
    assert [tokenizer.convert_ids_to_tokens(i) for i in ids] == list(ACTION_TOKENS)
    assert all(tokenizer.encode(t, add_special_tokens=False) == [i] for t, i in zip(ACTION_TOKENS, ids))
    emb, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    word = tokenizer(" internal", add_special_tokens=False)["input_ids"]
    assert torch.allclose(emb[ids[0]], emb[word].mean(0)) and torch.allclose(out[ids[0]], out[word].mean(0))


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_loss_falls_when_overfitting_and_the_checkpoint_is_a_plain_model(sft_dir, tiny_llm, tmp_path, lora) -> None:
    from speech_hands.reflection.chat_llm import is_text_reflector
    from speech_hands.training.finetune_llm import finetune_llm

    steps, lr = (20, 5e-2) if lora else (12, 1e-2)
    settings = _settings(tiny_llm, epochs=100, max_steps=steps, lr=lr, warmup=0.0, lora=lora, batch_size=4)
    metrics = finetune_llm(sft_dir, tmp_path / "ck", settings, show_progress=False)
    loss, action = metrics["curve"]["loss"], metrics["curve"]["action_loss"]
    # LoRA: the three new rows learn fast; the text tokens only fall steadily, because the random tiny model's
    # output layer stays frozen (its logits are bounded). Full: every weight moves, both fall.
    assert action[-1] < (0.5 if lora else 0.8) * action[0], metrics["curve"]
    assert loss[-1] < (0.97 if lora else 0.8) * loss[0], metrics["curve"]
    assert metrics["train"]["items"] == len((sft_dir / "train.jsonl").read_text().splitlines())
    assert "held_out" in metrics and "wer" in metrics["held_out"]
    ck = tmp_path / "ck"
    assert is_text_reflector(ck) and (ck / "config.json").is_file() and not (ck / "training").exists()
    assert not (ck / "adapter_config.json").exists()  # merged: no peft needed to load it
    info = json.loads((ck / "reflector.json").read_text())
    assert list(info["action_tokens"]) == list(ACTION_TOKENS)


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_result(sft_dir, tiny_llm, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from speech_hands.training.finetune_llm import finetune_llm

    settings = _settings(tiny_llm, epochs=3, max_steps=4, lr=1e-3)
    common = {"show_progress": False, "save_every": 1}
    straight = finetune_llm(sft_dir, tmp_path / "straight", settings, **common)

    def kill(step: int, loss: float) -> None:
        if step == 3:  # mid-epoch, after the state of step 3 was saved
            raise Killed

    with pytest.raises(Killed):
        finetune_llm(sft_dir, tmp_path / "killed", settings, on_step=kill, **common)
    with pytest.raises(ConfigurationError, match="holds a training run; pass --resume"):
        finetune_llm(sft_dir, tmp_path / "killed", settings, **common)
    other = settings.model_copy(update={"lr": 2e-3})
    with pytest.raises(ConfigurationError, match=r"other settings \(lr: 0.001 -> 0.002\)"):
        finetune_llm(sft_dir, tmp_path / "killed", other, resume=True, **common)
    resumed = finetune_llm(sft_dir, tmp_path / "killed", settings, resume=True, **common)
    assert resumed["curve"] == straight["curve"]
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_cli_checkpoint_reflects_in_the_agent_on_its_own_first_token(sft_dir, tiny_llm, tmp_path) -> None:
    from speech_hands.reflection.chat_llm import ChatLLMReflector

    out = tmp_path / "text-reflector"
    args = ["finetune", "--data", str(sft_dir), "--model", str(tiny_llm), "--lora", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output and "held_out" in result.output
    agent = SpeechHands.default(reflector=str(out), trace_db=":memory:")
    assert isinstance(agent.omni.policy, ChatLLMReflector) and agent.omni.rewriter is agent.omni.policy
    agent.close()

    from helpers import dev_flac

    from speech_hands.audio import load_audio
    from speech_hands.reflection.action_tokens import reflection_prompt
    from speech_hands.reflection.base import ReflectionInput
    from speech_hands.types import ToolOutput

    flac = dev_flac(IDS[0])
    args = ["transcribe", str(flac), "--json", "--reflector", str(out), "--trace-db", ":memory:"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    line = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("{")))
    reflection = line["reflection"]
    assert reflection["policy"] == "text-reflector" and reflection["raw_token"]
    assert reflection["action"] == max(reflection["probs"], key=reflection["probs"].get)
    # the same first token, computed directly from the checkpoint on the same candidates
    outputs = [ToolOutput.model_validate(o) for o in line["candidates"]]
    inp = ReflectionInput(
        audio=load_audio(flac),
        question=None,
        internal=next(o for o in outputs if o.role == "internal"),
        externals=[o for o in outputs if o.role == "external"],
    )
    first = ChatLLMReflector(str(out), device="cpu").first_token(reflection_prompt(inp, "asr"))
    for action, p in first.probs().items():
        assert reflection["probs"][action.value] == pytest.approx(p, abs=1e-5)
