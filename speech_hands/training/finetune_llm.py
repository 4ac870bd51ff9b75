"""``speech-hands finetune --model bundled:qwen2.5-0.5b --lora``: the text reflector LLM (the paper's no-audio variant).

Input: an ``export-sft`` folder, as for the action-token Whisper (:mod:`speech_hands.training.finetune`);
the audio is not used. Each record becomes one chat turn: the user turn is exactly the prompt
:class:`~speech_hands.reflection.chat_llm.ChatLLMReflector` builds at inference
(:func:`speech_hands.reflection.action_tokens.reflection_prompt` over the record's internal text and
each tool's N-best), the assistant turn is the target (action token, the text, end of turn). The
tools' confidences are not in the prompt yet (the export carries no scores).

- **Model**: ``bundled:qwen2.5-0.5b``, a ``.gguf`` file or a local transformers directory
  (:func:`speech_hands.backends.llm_weights.load_causal_lm`, float32 for training). The three action
  tokens are added as special tokens; their input and output embedding rows start as the mean of
  the rows of the words "internal", "external", "rewrite" (not random noise).
- **LoRA** (peft): rank-``r`` adapters on every attention and MLP projection, plus the three new
  rows of the input embedding and of the output layer (peft's trainable tokens: only those rows
  learn, and only they carry optimizer state). Merged into the weights when the checkpoint is
  written, so the checkpoint is a plain transformers model. Without ``--lora`` every weight trains.
- **Loss**: cross-entropy on the answer tokens only (the prompt is masked), the action token weighted
  ``action_weight`` times a text token: ``sum(w * ce) / sum(w)``; warm-up then linear decay; clipping.
- **Resumable**, with the Whisper finetune's contract: ``CKPT/training/state.pt`` every
  ``save_every`` steps (trainable weights, optimizer, scheduler, RNG, step, loss curve, data order); a
  run killed mid-epoch and resumed ends with the same weights and losses (tested); ``--resume`` with
  other settings or data is refused naming the differences.
- **Output**: ``save_pretrained`` weights (bfloat16) + tokenizer (with the three tokens), ``reflector.json``
  (format ``speech-hands-text-reflector``: what ``SpeechHands.default(reflector=CKPT)`` reads to use
  :class:`~speech_hands.reflection.chat_llm.ChatLLMReflector`) and ``metrics.json`` (loss curve, step
  time, action accuracy and per-action F1 on the training and the held-out records, the held-out WER
  of the routed answer).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from speech_hands.audio import virtual_audio
from speech_hands.errors import ConfigurationError
from speech_hands.reflection import action_tokens as at
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.chat_llm import CHECKPOINT_FILE, TEXT_FORMAT, TEXT_FORMAT_VERSION
from speech_hands.reflection.decision import decide
from speech_hands.training.export import ExportRecord
from speech_hands.training.finetune import (
    METRICS_FILE,
    STATE_DIR,
    STATE_FILE,
    FinetuneSettings,
    _atomic_save,
    _differences,
    _digest,
    _order,
    _schedule,
    _target_text,
    action_scores,
    read_records,
    train_steps,
)
from speech_hands.types import ACTION_TOKENS, Action, Hypothesis, ToolOutput

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MAX_TOKENS = 1024
_WORDS = {"<internal>": "internal", "<external>": "external", "<rewrite>": "rewrite"}


class TextReflectorInfo(BaseModel):
    """``reflector.json`` of a fine-tuned text reflector."""

    model_config = ConfigDict(extra="forbid")

    format: str = TEXT_FORMAT
    format_version: int = TEXT_FORMAT_VERSION
    name: str
    action_tokens: dict[str, int]
    source: dict[str, Any]
    training: dict[str, Any] = {}


def is_llm_spec(spec: str) -> bool:
    """Whether ``--model`` names a text LLM (the bundled Qwen, a ``.gguf`` file, a transformers directory)."""
    from speech_hands.backends.llm_weights import BUNDLED_QWEN

    path = Path(spec).expanduser()
    return spec == BUNDLED_QWEN or (path.is_file() and path.suffix == ".gguf") or (path / "config.json").is_file()


# ------------------------------------------------------------------------------------------- data


def record_input(record: ExportRecord) -> ReflectionInput:
    """The reflection input a record stands for: its internal text and each tool's N-best."""

    def output(tool: str, role: str, texts: Sequence[str]) -> ToolOutput:
        hyps = [Hypothesis(text=t, source=tool, rank=i) for i, t in enumerate(texts)]
        return ToolOutput(tool=tool, role=role, hypotheses=hyps)  # type: ignore[arg-type]

    return ReflectionInput(
        audio=virtual_audio(record.id),
        question=None,
        internal=output("internal", "internal", [record.internal or ""]),
        externals=[output(tool, "external", texts) for tool, texts in record.externals.items()],
    )


@dataclass
class Example:
    record: ExportRecord
    prompt: list[int]
    answer: list[int]


def chat_prefix(tokenizer: Any, prompt: str) -> str:
    """The chat-templated user turn and the assistant's generation prompt, as the reflector encodes it."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )


def build_examples(records: Sequence[ExportRecord], tokenizer: Any) -> list[Example]:
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    out = []
    for r in records:
        prompt = tokenizer(
            chat_prefix(tokenizer, at.reflection_prompt(record_input(r), "asr")), add_special_tokens=False
        )
        action_id = tokenizer.convert_tokens_to_ids(r.action.token)
        text = tokenizer(_target_text(r), add_special_tokens=False)["input_ids"]
        answer = [action_id, *text, eos]
        ids = list(prompt["input_ids"])[: MAX_TOKENS - len(answer)]
        out.append(Example(r, ids, answer))
    return out


def _batch(examples: Sequence[Example], pad: int, action_weight: float) -> tuple[Any, Any, Any, Any, Any]:
    import torch

    width = max(len(e.prompt) + len(e.answer) for e in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), -100, dtype=torch.long)
    weights = torch.zeros((len(examples), width))
    is_action = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, e in enumerate(examples):
        seq = e.prompt + e.answer
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        start = len(e.prompt)
        targets[i, start - 1 : len(seq) - 1] = torch.tensor(e.answer)  # position t predicts token t + 1
        weights[i, start - 1 : len(seq) - 1] = 1.0
        weights[i, start - 1] = action_weight
        is_action[i, start - 1] = True
    return ids, mask, targets, weights, is_action


def _loss(model: Any, batch: tuple[Any, ...]) -> tuple[Any, float, float]:
    import torch.nn.functional as F

    ids, mask, targets, weights, is_action = batch
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    selected = weights > 0
    ce = F.cross_entropy(logits[selected].float(), targets[selected], reduction="none")
    w = weights[selected]
    loss = (ce * w).sum() / w.sum()
    action, detached = is_action[selected], ce.detach()
    action_loss = float(detached[action].mean()) if action.any() else float("nan")
    text_loss = float(detached[~action].mean()) if (~action).any() else float("nan")
    return loss, action_loss, text_loss


# ------------------------------------------------------------------------------------------- the model


def add_action_tokens(model: Any, tokenizer: Any) -> list[int]:
    """Add the three tokens as special tokens; their input / output rows start as the mean of the rows
    of the words they name. Returns their ids (``<internal>``, ``<external>``, ``<rewrite>``)."""
    import torch

    tokenizer.add_tokens(list(ACTION_TOKENS), special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in ACTION_TOKENS]
    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not matrices[0]:
        matrices.append(out.weight)
    with torch.no_grad():
        for token, token_id in zip(ACTION_TOKENS, ids):
            word_ids = tokenizer(" " + _WORDS[token], add_special_tokens=False)["input_ids"]
            for weight in matrices:
                weight[token_id] = weight[word_ids].mean(dim=0)
    return ids


def prepare_trainable(model: Any, settings: FinetuneSettings, action_ids: list[int]) -> Any:
    """LoRA adapters + the three token rows (peft), or every weight (full). Returns the model to train."""
    if not settings.lora:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    try:
        import peft
    except ImportError as exc:
        raise ConfigurationError("--lora needs the 'peft' package: pip install 'speech-hands[llm]'") from exc
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    tokens = {"embed_tokens": action_ids}
    out = model.get_output_embeddings()
    if out is not None and out.weight is not model.get_input_embeddings().weight:
        tokens["lm_head"] = action_ids
    config = peft.LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=0.0,
        target_modules=[t for t in LORA_TARGETS if t in names],
        trainable_token_indices=tokens,
    )
    return peft.get_peft_model(model, config)


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------------------------------- evaluation


def evaluate(model: Any, tokenizer: Any, examples: Sequence[Example], action_ids: list[int]) -> dict[str, Any]:
    """First-token decisions over ``examples`` (accuracy, per-action F1) and, where the records carry
    gold text, the WER of the routed answer (``<rewrite>``: the model's greedy continuation)."""
    import torch

    from speech_hands.metrics.wer import corpus_wer

    model.eval()
    items = []
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    with torch.inference_mode():
        for e in examples:
            ids = torch.tensor([e.prompt])
            logits = model(input_ids=ids, use_cache=False).logits[0, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)[action_ids]
            first = at.FirstToken(
                logits=tuple(float(v) for v in logprobs),  # type: ignore[arg-type]
                raw_token=str(tokenizer.convert_ids_to_tokens(int(torch.argmax(logits)))),
                action_mass=float(torch.exp(torch.logsumexp(logprobs, dim=0))),
            )
            probs = first.probs()
            action = decide(probs)
            top = next((h[0] for h in e.record.externals.values() if h), "")
            answer = {Action.INTERNAL: e.record.internal or "", Action.EXTERNAL: top}.get(action, "")
            if action is Action.REWRITE:
                forced = torch.tensor([[*e.prompt, action_ids[2]]])
                out = model.generate(
                    input_ids=forced, attention_mask=torch.ones_like(forced), max_new_tokens=96, do_sample=False
                )
                new = out[0, forced.shape[1] :].tolist()
                new = new[: new.index(eos)] if eos in new else new
                answer = at.clean_answer(tokenizer.decode(new, skip_special_tokens=True))
            items.append(
                {
                    "id": e.record.id,
                    "gold": e.record.action.value,
                    "predicted": action.value,
                    "raw_token": first.raw_token,
                    "probs": {a.value: round(p, 6) for a, p in probs.items()},
                    "action_mass": first.action_mass,
                    "answer": answer,
                    "internal": e.record.internal or "",
                    "external": top,
                }
            )
    result = action_scores([i["gold"] for i in items], [i["predicted"] for i in items])
    if items and all(e.record.gold is not None for e in examples):
        refs = [e.record.gold or "" for e in examples]
        wer = {name: corpus_wer(refs, [i[name] for i in items]) for name in ("answer", "internal", "external")}
        result["wer"] = {
            "routed": 100 * wer["answer"].wer,
            "internal": 100 * wer["internal"].wer,
            "external": 100 * wer["external"].wer,
            "reference_words": wer["answer"].reference_length,
        }
    result["predictions"] = items
    return result


# ------------------------------------------------------------------------------------------- the run


def _read(folder: Path) -> tuple[list[ExportRecord], list[ExportRecord]]:
    train_file = folder / "train.jsonl"
    if not train_file.is_file():
        raise ConfigurationError(
            f"no train.jsonl in {folder}; write the data with `speech-hands export-sft LABELS --out {folder}`"
        )
    train = read_records(train_file, need_audio=False)
    if not train:
        raise ConfigurationError(f"{train_file}: no records")
    test = read_records(folder / "test.jsonl", need_audio=False) if (folder / "test.jsonl").is_file() else []
    return train, test


def finetune_llm(
    data: str | Path,
    out: str | Path,
    settings: FinetuneSettings,
    *,
    resume: bool = False,
    fresh: bool = False,
    save_every: int = 50,
    keep_state: bool = False,
    console: Any = None,
    on_step: Callable[[int, float], None] | None = None,
    show_progress: bool = True,
    evaluate_train: bool = True,
) -> dict[str, Any]:
    """Fine-tune the text reflector LLM on ``data`` into ``out``; returns the metrics (also in
    ``out/metrics.json``). ``on_step(step, loss)`` runs after every step (after its state is saved);
    ``evaluate_train=False`` skips the decisions on the training records (cross-validation folds)."""
    import torch
    from rich.console import Console

    from speech_hands.backends.llm_weights import load_causal_lm

    console = console or Console(stderr=True)
    data_dir, out_dir = Path(data), Path(out)
    if not is_llm_spec(settings.model):
        raise ConfigurationError(f"{settings.model!r} is not a text LLM (bundled:qwen2.5-0.5b, a .gguf, a directory)")
    train_records, test_records = _read(data_dir)
    run_key = {
        **settings.model_dump(exclude={"context"}),
        "lr": settings.learning_rate,
        "data": _digest([data_dir / "train.jsonl"]),
    }
    state_file = out_dir / STATE_DIR / STATE_FILE
    state: dict[str, Any] | None = None
    if state_file.is_file():
        if not (resume or fresh):
            raise ConfigurationError(
                f"{out_dir} holds a training run; pass --resume to continue it, --fresh to start over, or another --out"
            )
        if resume:
            state = torch.load(state_file, map_location="cpu", weights_only=True)
            diff = _differences(state["run_key"], run_key)
            if diff:
                raise ConfigurationError(
                    f"--resume: {out_dir} holds a run with other settings ({'; '.join(diff)}); resume with the "
                    "same options and data, or pass --fresh / another --out to start a new run"
                )
    elif resume:
        raise ConfigurationError(f"--resume: {out_dir} holds no training state to resume; drop --resume")
    elif (out_dir / METRICS_FILE).is_file() and not fresh:
        raise ConfigurationError(
            f"{out_dir} holds a finished checkpoint; pass --fresh to overwrite it, or another --out"
        )
    if fresh and not resume and out_dir.exists():
        shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)
        for name in (METRICS_FILE, CHECKPOINT_FILE):
            (out_dir / name).unlink(missing_ok=True)

    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    base, tokenizer = load_causal_lm(settings.model, device="cpu", dtype="float32", console=console)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigurationError(f"{settings.model!r} has no chat template: fine-tune a chat / instruct model")
    action_ids = add_action_tokens(base, tokenizer)
    model = prepare_trainable(base, settings, action_ids)
    train = build_examples(train_records, tokenizer)
    test = build_examples(test_records, tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(train) / settings.batch_size)
    total = settings.epochs * per_epoch
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, settings.warmup))
    curve: dict[str, list[float]] = {"loss": [], "action_loss": [], "text_loss": [], "lr": []}
    step_times: list[float] = []
    start = 0
    orders = {e: _order(len(train), settings.seed, e) for e in range(math.ceil(total / per_epoch))}
    if state is not None:
        missing = set(_trainable_state(model)) - set(state["trainable"])
        if missing:
            raise ConfigurationError(f"--resume: the saved state lacks {sorted(missing)[:3]}; start with --fresh")
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        curve, step_times, start = state["curve"], state["step_times"], state["step"]
        if {int(k): v for k, v in state["orders"].items()} != orders:
            raise ConfigurationError("--resume: the saved data order differs from this run's; start with --fresh")
        console.print(f"resuming {out_dir} at step {start}/{total}")

    def save_state(step: int) -> None:
        _atomic_save(
            {
                "run_key": run_key,
                "step": step,
                "trainable": _trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "curve": curve,
                "step_times": step_times,
                "orders": orders,
            },
            state_file,
        )

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    train_steps(
        lambda chosen: _loss(model, _batch([train[i] for i in chosen], pad, settings.action_weight)),
        optimizer,
        scheduler,
        params,
        settings,
        orders=orders,
        per_epoch=per_epoch,
        steps=range(start, total),
        curve=curve,
        step_times=step_times,
        save_state=save_state,
        save_every=save_every,
        on_step=on_step,
        console=console,
        show_progress=show_progress,
        title="fine-tuning the text reflector",
    )

    if settings.lora:
        model = model.merge_and_unload()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    started = time.perf_counter()
    metrics: dict[str, Any] = {
        "run_key": run_key,
        "steps": total,
        "epochs": settings.epochs,
        "steps_per_epoch": per_epoch,
        "curve": curve,
        "step_time_s": float(np.mean(step_times)) if step_times else None,
    }
    if evaluate_train:
        metrics["train"] = evaluate(model, tokenizer, train, action_ids)
    if test:
        metrics["held_out"] = evaluate(model, tokenizer, test, action_ids)
    metrics["evaluation_s"] = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = TextReflectorInfo(
        name=out_dir.resolve().name,
        action_tokens=dict(zip(ACTION_TOKENS, action_ids)),
        source={"model": settings.model},
        training={
            "settings": settings.model_dump(exclude={"context"}),
            "learning_rate": settings.learning_rate,
            "steps": total,
            "data": {"dir": str(data_dir.resolve()), "digest": run_key["data"], "train": len(train), "test": len(test)},
            "actions": dict(Counter(r.action.value for r in train_records)),
        },
    )
    (out_dir / CHECKPOINT_FILE).write_text(info.model_dump_json(indent=1) + "\n", encoding="utf-8")
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    if not keep_state:
        shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)
    return metrics
