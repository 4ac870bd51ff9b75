"""``speech-hands finetune``: the action-token Whisper, fine-tuned on ``export-sft`` records.

Input: an ``export-sft`` folder (``train.jsonl``, optionally ``test.jsonl``, ``export.json``). Each
record becomes one sequence of :mod:`speech_hands.backends.action_whisper`: the external hypotheses in
Whisper's previous-text context, the start-of-transcript prefix, then the answer (the action token,
the target text, end of text). The source model (``bundled:base``, ``bundled:tiny.en``, a local
CTranslate2 Whisper directory or an openai-whisper ``.pt``) is converted losslessly
(:mod:`speech_hands.backends.whisper_torch`), the three action tokens are appended to its vocabulary
(new rows from the embeddings of the words "internal", "external", "rewrite"), and the decoder is
trained on cached encoder states (the encoder is frozen: the states of each audio file are computed
once, stored as float16 under ``--states-dir``, and shared by every run on the same source model).

- **Loss**: cross-entropy on the answer tokens only (action token, text, end), the action token
  weighted ``action_weight`` times a text token: ``sum(w * ce) / sum(w)`` per batch.
- **Full or LoRA**: all decoder weights (AdamW), or rank-``r`` adapters on every decoder linear layer
  plus the three new embedding rows (merged into the weights when the checkpoint is written, so the
  checkpoint is a plain Whisper either way). Learning rate: linear warm-up over the first 10 % of the
  steps, then linear decay to 0; gradients clipped at norm 1.
- **Resumable**: every ``save_every`` steps (and at the last) ``CKPT/training/state.pt`` holds the
  trainable weights, the optimizer and scheduler state, the RNG states, the step, the loss curve and
  the data order; the order of epoch ``e`` is a permutation seeded by ``(seed, e)``. A run killed
  mid-epoch and resumed from its last state ends with exactly the weights and losses of an
  uninterrupted run (tested). ``--resume`` with other settings or other data is refused, naming the
  differences.
- **Output**: the checkpoint (``model.pt``, tokenizer, ``reflector.json``: what
  :class:`~speech_hands.backends.action_whisper.ActionWhisperReflector` loads) and ``metrics.json``: the
  loss curve (total, action token, text), the step time, the action accuracy and per-action precision /
  recall / F1 on the training records and on ``test.jsonl``, and on the held-out records the WER of
  the routed answer (``<internal>``: the internal text, ``<external>``: the first tool's top-1,
  ``<rewrite>``: the model's own greedy rewrite) beside internal, external and the oracle of the three.

Bad input is refused with the file and line: a line that is not an ``export-sft`` record (bad JSON,
an unknown action), a target that does not start with its action token, a record without audio or
whose audio file is missing, a record without the candidates (written by an older ``export-sft``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speech_hands.backends.action_whisper import (
    CHECKPOINT_FILE,
    ActionTokenizer,
    ContextKind,
    ContextSpec,
    add_action_tokens,
    context_text,
    decoder_hidden,
    first_token,
    first_token_logprobs,
    greedy_after,
    log_mel,
    project,
    write_checkpoint,
)
from speech_hands.backends.weights import BUNDLED_PREFIX, cache_dir
from speech_hands.errors import ConfigurationError
from speech_hands.reflection.decision import ACTIONS, decide
from speech_hands.training.export import ExportRecord
from speech_hands.types import Action

STATE_DIR = "training"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.json"
BUNDLED_MODELS = ("bundled:base", "bundled:tiny.en")


class FinetuneSettings(BaseModel):
    """Everything that decides the trained weights (a ``--resume`` must repeat all of it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "bundled:base"
    lora: bool = False
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: float = Field(default=16.0, gt=0)
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0, description="default 1e-5 (full), 3e-4 (LoRA)")
    batch_size: int = Field(default=8, ge=1)
    action_weight: float = Field(default=1.0, gt=0, description="loss weight of the action token vs a text token")
    warmup: float = Field(default=0.1, ge=0, lt=1, description="share of the steps with a linear warm-up")
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    context: ContextKind = "externals"
    seed: int = 0

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (3e-4 if self.lora else 1e-5)


# ------------------------------------------------------------------------------------------- data


def read_records(path: Path, *, need_audio: bool = True) -> list[ExportRecord]:
    """An ``export-sft`` ``<split>.jsonl``, strictly: a bad line is an error naming the file and line."""
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = ExportRecord.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "line"
                raise ConfigurationError(
                    f"{where}: not an export-sft record ({field}: {first['msg']}); finetune reads what "
                    "`speech-hands export-sft` writes"
                ) from exc
            if not record.target.startswith(record.action.token):
                raise ConfigurationError(f"{where}: the target does not start with its action {record.action.token}")
            if record.task != "asr":
                raise ConfigurationError(f"{where}: task {record.task!r}; the action-token Whisper is trained on ASR")
            if record.internal is None or not record.externals:
                raise ConfigurationError(
                    f"{where}: the record lacks the candidates (internal / externals); re-export it with this "
                    "version's `speech-hands export-sft`"
                )
            if need_audio:
                if record.audio is None:
                    raise ConfigurationError(
                        f"{where}: no audio; the action-token Whisper hears the audio: export without --no-audio"
                    )
                if not Path(record.audio).is_file():
                    raise ConfigurationError(f"{where}: audio file not found: {record.audio}")
            records.append(record)
    return records


def read_sft_dir(folder: Path) -> tuple[list[ExportRecord], list[ExportRecord], dict[str, Any]]:
    """Train and test records of an ``export-sft`` folder, and its ``export.json`` (may be empty)."""
    train_file = folder / "train.jsonl"
    if not train_file.is_file():
        raise ConfigurationError(
            f"no train.jsonl in {folder}; write the data with `speech-hands export-sft LABELS --out {folder}`"
        )
    train = read_records(train_file)
    if not train:
        raise ConfigurationError(f"{train_file}: no records")
    test = read_records(folder / "test.jsonl") if (folder / "test.jsonl").is_file() else []
    export = json.loads((folder / "export.json").read_text()) if (folder / "export.json").is_file() else {}
    return train, test, export


def _target_text(record: ExportRecord) -> str:
    return record.target[len(record.action.token) :].strip()


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class Example:
    record: ExportRecord
    prefix: list[int]
    answer: list[int]


def build_examples(records: Sequence[ExportRecord], tokenizer: ActionTokenizer, spec: ContextSpec, n_ctx: int):
    out = []
    for r in records:
        prefix = tokenizer.prefix(context_text(list(r.externals.values()), r.internal, spec), n_ctx)
        answer = tokenizer.answer(r.action, _target_text(r))
        room = n_ctx - len(prefix) + 1  # the input is prefix + answer[:-1]
        if len(answer) > room:
            answer = [*answer[: room - 1], tokenizer.whisper.eot]
        out.append(Example(r, prefix, answer))
    return out


# ------------------------------------------------------------------------------------------- the model


def check_model_spec(spec: str) -> None:
    """Only Whisper sources are supported: bundled models, a local CTranslate2 directory, an openai-whisper .pt."""
    path = Path(spec).expanduser()
    if spec.startswith(BUNDLED_PREFIX):
        if spec not in BUNDLED_MODELS:
            raise ConfigurationError(f"no bundled model {spec!r}; bundled: {', '.join(BUNDLED_MODELS)}")
        return
    if (path.is_dir() and (path / "model.bin").is_file()) or (path.is_file() and path.suffix == ".pt"):
        return
    raise ConfigurationError(
        f"--model {spec!r} is not supported yet: finetune trains the action-token Whisper from "
        f"{' / '.join(BUNDLED_MODELS)}, a local CTranslate2 Whisper directory or a local openai-whisper checkpoint "
        "(.pt); or the text reflector LLM from bundled:qwen2.5-0.5b, a local .gguf or a local transformers directory "
        "(`speech-hands finetune --model bundled:qwen2.5-0.5b --lora`). Hub ids are not supported yet."
    )


def source_model(spec: str) -> tuple[Any, ActionTokenizer, dict[str, Any]]:
    """The source Whisper (float32) with the three action tokens added, its tokenizer and provenance."""
    from speech_hands.backends.whisper_torch import load_torch_whisper

    check_model_spec(spec)
    model, meta = load_torch_whisper(spec)
    n_vocab = model.dims.n_vocab
    multilingual = n_vocab >= 51865
    tokenizer = ActionTokenizer.for_model(multilingual, n_vocab - 51765 - int(multilingual))
    add_action_tokens(model, tokenizer)
    source = {"model": spec, "sha256": meta.get("source_sha256"), "dims": {**vars(model.dims), "n_vocab": n_vocab}}
    return model, tokenizer, source


class LoRALinear:
    """Factory of a LoRA-wrapped linear layer (torch imported lazily)."""

    @staticmethod
    def wrap(linear: Any, rank: int, alpha: float) -> Any:
        import torch
        from torch import nn

        class _LoRA(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.base = linear
                self.scale = alpha / rank
                self.lora_a = nn.Parameter(torch.empty(rank, linear.in_features))
                self.lora_b = nn.Parameter(torch.zeros(linear.out_features, rank))
                nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

            def forward(self, x: Any) -> Any:
                return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

            def merged(self) -> Any:
                with torch.no_grad():
                    self.base.weight += (self.lora_b @ self.lora_a) * self.scale
                return self.base

        return _LoRA()


_LINEARS = ("attn.query", "attn.key", "attn.value", "attn.out", "cross_attn.query", "cross_attn.key")
_LINEARS += ("cross_attn.value", "cross_attn.out", "mlp.0", "mlp.2")


def _get(module: Any, dotted: str) -> tuple[Any, str]:
    *path, last = dotted.split(".")
    for part in path:
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module, last


def _set(parent: Any, name: str, value: Any) -> None:
    if name.isdigit():
        parent[int(name)] = value
    else:
        setattr(parent, name, value)


def prepare_trainable(model: Any, settings: FinetuneSettings, tokenizer: ActionTokenizer) -> list[Any]:
    """Freeze what is not trained; with LoRA wrap the decoder's linear layers. Returns the parameters."""
    import torch

    for p in model.parameters():
        p.requires_grad_(False)
    decoder = model.decoder
    if not settings.lora:
        for p in decoder.parameters():
            p.requires_grad_(True)
        return [p for p in decoder.parameters()]
    params = []
    for block in decoder.blocks:
        for dotted in _LINEARS:
            parent, name = _get(block, dotted)
            module = getattr(parent, name) if not name.isdigit() else parent[int(name)]
            wrapped = LoRALinear.wrap(module, settings.lora_rank, settings.lora_alpha)
            _set(parent, name, wrapped)
            params += [wrapped.lora_a, wrapped.lora_b]
    emb = decoder.token_embedding.weight
    emb.requires_grad_(True)
    mask = torch.zeros(emb.shape[0], 1)
    mask[list(tokenizer.action_ids)] = 1.0
    emb.register_hook(lambda grad: grad * mask)  # only the three new rows learn
    return [*params, emb]


def merge_lora(model: Any) -> None:
    for block in model.decoder.blocks:
        for dotted in _LINEARS:
            parent, name = _get(block, dotted)
            module = parent[int(name)] if name.isdigit() else getattr(parent, name)
            if hasattr(module, "merged"):
                _set(parent, name, module.merged())


# ------------------------------------------------------------------------------------------- states


def encoder_states(
    model: Any, audio_paths: Sequence[str], source_sha: str, states_dir: Path, progress: Callable | None = None
) -> dict[str, Any]:
    """Frozen-encoder states ``(frames, d)`` (float16 torch tensors) per audio file, cached on disk."""
    import torch

    from speech_hands.audio import load_audio, sha256_file

    folder = states_dir / (source_sha or "unknown")[:16]
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    unique = list(dict.fromkeys(audio_paths))
    for i, path in enumerate(unique):
        file = folder / f"{sha256_file(Path(path))[:24]}.npy"
        if file.is_file():
            out[path] = torch.from_numpy(np.load(file))
        else:
            samples = load_audio(path).samples
            if samples is None or len(samples) > 30 * 16_000 + 1:
                raise ConfigurationError(f"{path}: the action-token Whisper trains on audio of at most 30 s")
            with torch.inference_mode():
                states = model.encoder(log_mel(samples, model.dims.n_mels)[None])[0].to(torch.float16)
            array = states.numpy()
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".state.", suffix=".npy")
            os.close(fd)
            np.save(tmp, array)
            os.replace(tmp, file)
            out[path] = torch.from_numpy(array.copy())
        if progress is not None:
            progress(i + 1, len(unique))
    return out


# ------------------------------------------------------------------------------------------- training


def _batch(examples: Sequence[Example], states: dict[str, Any], eot: int, action_weight: float):
    import torch

    seqs = [e.prefix + e.answer for e in examples]
    width = max(len(s) for s in seqs) - 1
    inputs = torch.full((len(seqs), width), eot, dtype=torch.long)
    targets = torch.full((len(seqs), width), eot, dtype=torch.long)
    weights = torch.zeros((len(seqs), width))
    is_action = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (e, s) in enumerate(zip(examples, seqs)):
        n = len(s) - 1
        inputs[i, :n] = torch.tensor(s[:-1])
        targets[i, :n] = torch.tensor(s[1:])
        start = len(e.prefix) - 1  # the position that predicts the action token
        weights[i, start:n] = 1.0
        weights[i, start] = action_weight
        is_action[i, start] = True
    audio = torch.stack([states[e.record.audio].float() for e in examples])  # type: ignore[index]
    return inputs, targets, weights, is_action, audio


def _loss(model: Any, batch: tuple) -> tuple[Any, float, float]:
    import torch.nn.functional as F

    inputs, targets, weights, is_action, audio = batch
    hidden = decoder_hidden(model.decoder, inputs, audio)
    selected = weights > 0
    logits = project(model.decoder, hidden[selected])
    ce = F.cross_entropy(logits, targets[selected], reduction="none")
    w = weights[selected]
    loss = (ce * w).sum() / w.sum()
    action, detached = is_action[selected], ce.detach()
    action_loss = float(detached[action].mean()) if action.any() else float("nan")
    text_loss = float(detached[~action].mean()) if (~action).any() else float("nan")
    return loss, action_loss, text_loss


def _order(n: int, seed: int, epoch: int) -> list[int]:
    return np.random.default_rng([seed, epoch]).permutation(n).tolist()


def _schedule(total: int, warmup: float) -> Callable[[int], float]:
    warm = round(warmup * total)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return factor


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


# ------------------------------------------------------------------------------------------- evaluation


def action_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Action accuracy, per-action precision / recall / F1 and the confusion (``confusion[gold][predicted]``)."""
    names = [a.value for a in ACTIONS]
    confusion = {g: {p: 0 for p in names} for g in names}
    for g, p in zip(gold, predicted):
        confusion[g][p] += 1
    per_action = {}
    for name in names:
        tp = confusion[name][name]
        n_pred = sum(confusion[g][name] for g in names)
        support = sum(confusion[name].values())
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_action[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": n_pred}
    return {
        "items": len(gold),
        "accuracy": sum(g == p for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0,
        "per_action": per_action,
        "confusion": confusion,
    }


def evaluate(
    model: Any,
    tokenizer: ActionTokenizer,
    examples: Sequence[Example],
    states: dict[str, Any],
    *,
    rewrite: bool = True,
    batch_size: int = 8,
) -> dict[str, Any]:
    """First-token decisions over ``examples`` (accuracy, per-action F1); with ``rewrite`` also the
    WER of the routed answers (the model's own rewrite decoded where it says ``<rewrite>``)."""
    import torch

    from speech_hands.metrics.wer import corpus_wer, word_errors

    model.eval()
    items = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            audio = torch.stack([states[e.record.audio].float() for e in chunk])  # type: ignore[index]
            rows = first_token_logprobs(model, tokenizer, [e.prefix for e in chunk], audio)
            for i, e in enumerate(chunk):
                first = first_token(rows[i], tokenizer)
                probs = first.probs()
                action = decide(probs)
                item: dict[str, Any] = {
                    "id": e.record.id,
                    "gold": e.record.action.value,
                    "predicted": action.value,
                    "probs": {a.value: round(p, 6) for a, p in probs.items()},
                    "action_mass": first.action_mass,
                }
                if rewrite:
                    top = next((h[0] for h in e.record.externals.values() if h), "")
                    answer = {Action.INTERNAL: e.record.internal or "", Action.EXTERNAL: top}.get(action)
                    if action is Action.REWRITE:
                        answer, _ = greedy_after(model, tokenizer, e.prefix, Action.REWRITE, audio[i : i + 1])
                    item |= {"answer": answer, "internal": e.record.internal or "", "external": top}
                items.append(item)
    result = action_scores([i["gold"] for i in items], [i["predicted"] for i in items])
    if rewrite and items and all(e.record.gold is not None for e in examples):
        refs = [e.record.gold or "" for e in examples]
        wer = {name: corpus_wer(refs, [i[name] for i in items]) for name in ("answer", "internal", "external")}
        per_item = {
            name: [word_errors(r, i[name]).errors for r, i in zip(refs, items)] for name in ("internal", "external")
        }
        oracle = sum(min(a, b) for a, b in zip(per_item["internal"], per_item["external"]))
        words = wer["answer"].reference_length
        result["wer"] = {
            "routed": 100 * wer["answer"].wer,
            "internal": 100 * wer["internal"].wer,
            "external": 100 * wer["external"].wer,
            "oracle_internal_external": 100 * oracle / max(1, words),
            "reference_words": words,
            "errors": {
                "routed": wer["answer"].errors,
                "internal": wer["internal"].errors,
                "external": wer["external"].errors,
            },
        }
    result["predictions"] = items
    return result


# ------------------------------------------------------------------------------------------- the run


def train_steps(
    loss_of: Callable[[list[int]], tuple[Any, float, float]],
    optimizer: Any,
    scheduler: Any,
    params: Sequence[Any],
    settings: FinetuneSettings,
    *,
    orders: dict[int, list[int]],
    per_epoch: int,
    steps: range,
    curve: dict[str, list[float]],
    step_times: list[float],
    save_state: Callable[[int], None],
    save_every: int,
    on_step: Callable[[int, float], None] | None,
    console: Any,
    show_progress: bool,
    title: str,
) -> None:
    """The optimisation loop both fine-tunes share (this one and the text reflector LLM's): the batch of
    each step from the seeded per-epoch ``orders``, ``loss_of(indices) -> (loss, action_loss, text_loss)``,
    clipped AdamW step and schedule, the loss curve and step times appended in place, the state saved
    every ``save_every`` steps and at the end (so a killed run resumes where it stopped)."""
    import torch

    from speech_hands.progress import progress_bar

    total = steps.stop
    with progress_bar(console, disable=not show_progress) as progress:
        task = progress.add_task(title, total=total, completed=steps.start)
        for step in steps:
            tick = time.perf_counter()
            epoch, index = divmod(step, per_epoch)
            chosen = orders[epoch][index * settings.batch_size : (index + 1) * settings.batch_size]
            loss, action_loss, text_loss = loss_of(chosen)
            value = float(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            curve["lr"].append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            curve["loss"].append(value)
            curve["action_loss"].append(action_loss)
            curve["text_loss"].append(text_loss)
            step_times.append(time.perf_counter() - tick)
            progress.update(
                task,
                advance=1,
                description=f"{title} (epoch {epoch + 1}, loss {value:.3f}, action {action_loss:.3f})",
            )
            if (step + 1) % save_every == 0 or step + 1 == total:
                save_state(step + 1)
            if on_step is not None:
                on_step(step + 1, value)


def finetune(
    data: str | Path,
    out: str | Path,
    settings: FinetuneSettings | None = None,
    *,
    resume: bool = False,
    fresh: bool = False,
    save_every: int = 50,
    keep_state: bool = False,
    states_dir: str | Path | None = None,
    console: Any = None,
    on_step: Callable[[int, float], None] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the action-token Whisper on ``data`` (an ``export-sft`` folder) into ``out``; returns
    the metrics (also written to ``out/metrics.json``). ``on_step(step, loss)`` is called after every
    step (and after the state is saved at that step)."""
    import torch
    from rich.console import Console

    from speech_hands.progress import progress_bar

    settings = settings or FinetuneSettings()
    console = console or Console(stderr=True)
    data_dir, out_dir = Path(data), Path(out)
    check_model_spec(settings.model)
    train_records, test_records, export = read_sft_dir(data_dir)
    n_best = int(export.get("options", {}).get("n_best", 5))
    spec = ContextSpec(n_best=n_best, kind=settings.context)
    run_key = {
        **settings.model_dump(),
        "lr": settings.learning_rate,
        "n_best": n_best,
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
    elif resume and (out_dir / METRICS_FILE).is_file():
        done = json.loads((out_dir / METRICS_FILE).read_text())
        diff = _differences(done.get("run_key", {}), run_key)
        if diff:
            raise ConfigurationError(
                f"--resume: {out_dir} holds a finished run with other settings ({'; '.join(diff)})"
            )
        console.print(f"{out_dir}: the run is already finished")
        return done
    elif resume:
        raise ConfigurationError(f"--resume: {out_dir} holds no training state to resume; drop --resume")
    elif (out_dir / METRICS_FILE).is_file() and not fresh:
        raise ConfigurationError(
            f"{out_dir} holds a finished checkpoint; pass --fresh to overwrite it, or another --out"
        )
    if fresh and not resume and out_dir.exists():
        shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)
        for name in (METRICS_FILE, CHECKPOINT_FILE):  # a killed fresh run must not look finished
            (out_dir / name).unlink(missing_ok=True)

    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    model, tokenizer, source = source_model(settings.model)
    n_ctx = model.dims.n_text_ctx
    train = build_examples(train_records, tokenizer, spec, n_ctx)
    test = build_examples(test_records, tokenizer, spec, n_ctx)

    states_root = Path(states_dir) if states_dir is not None else cache_dir() / "encoder-states"
    started = time.perf_counter()
    with progress_bar(console, disable=not show_progress) as progress:
        task = progress.add_task("encoder states", total=None)
        states = encoder_states(
            model,
            [e.record.audio for e in train + test],  # type: ignore[misc]
            source.get("sha256") or "",
            states_root,
            lambda done, total: progress.update(task, completed=done, total=total),
        )
    states_s = time.perf_counter() - started

    params = prepare_trainable(model, settings, tokenizer)
    embedding = model.decoder.token_embedding.weight
    groups = [
        {"params": [p for p in params if p is not embedding], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if p is embedding], "weight_decay": 0.0},  # LoRA: only 3 rows learn
    ]
    if not settings.lora:
        groups = [{"params": params, "weight_decay": settings.weight_decay}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.learning_rate)
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
        model.decoder.load_state_dict(state["decoder"])
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
                "decoder": model.decoder.state_dict(),
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

    model.train()
    eot = tokenizer.whisper.eot
    train_steps(
        lambda chosen: _loss(model, _batch([train[i] for i in chosen], states, eot, settings.action_weight)),
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
        title="fine-tuning",
    )

    merge_lora(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    training = {
        "settings": settings.model_dump(),
        "learning_rate": settings.learning_rate,
        "steps": total,
        "data": {"dir": str(data_dir.resolve()), "digest": run_key["data"], "train": len(train), "test": len(test)},
        "actions": dict(Counter(r.action.value for r in train_records)),
        "encoder": "frozen (cached states)",
    }
    write_checkpoint(out_dir, model, tokenizer, context=spec, source=source, training=training)
    started = time.perf_counter()
    metrics: dict[str, Any] = {
        "run_key": run_key,
        "steps": total,
        "epochs": settings.epochs,
        "steps_per_epoch": per_epoch,
        "curve": curve,
        "step_time_s": float(np.mean(step_times)) if step_times else None,
        "encoder_states_s": states_s,
        "train": evaluate(model, tokenizer, train, states, rewrite=False),
    }
    if test:
        metrics["held_out"] = evaluate(model, tokenizer, test, states)
    metrics["evaluation_s"] = time.perf_counter() - started
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    if not keep_state:
        shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)
    return metrics
