"""A chat model fine-tuned with the three action tokens, run in-process with transformers.

:class:`ActionTokenLM` is the engine shared by the omni backend (:mod:`speech_hands.backends.qwen_omni`,
which adds the audio) and :class:`~speech_hands.reflection.chat_llm.ChatLLMReflector` (any text chat LLM, e.g. a Qwen2.5 instruct model:
a cascaded reflector / GER rewriter that reads the candidates as text only). What it does:

- **reflect**: one forward pass over the reflection prompt (chat template, generation prompt); the last
  position's logits restricted to the three action-token ids give ``P(internal)``, ``P(external)``,
  ``P(rewrite)`` (:mod:`speech_hands.reflection.action_tokens`). The decision is the most probable action
  (a constrained first token: the model cannot answer with anything else). The unconstrained argmax
  token is kept as ``raw_token`` and the three tokens' share of the mass in the rationale, so a model
  that was not fine-tuned shows up in the trace instead of silently routing at random.
- **the answer after the token**: with ``write_answer`` the model continues after its action token
  (the paper's format: token then final text). ``<external>`` followed by one of the external
  hypotheses names that hypothesis (``external_rank``); the text is what majority voting groups on.
- **majority sampling**: ``reflect(sample=True)`` draws the action from ``softmax(z / temperature)``
  with a seed from ``(seed, round, sample_index)``. With ``batch_samples`` (default) the first draw of
  a round computes all ``n_samples`` draws in one batched ``generate`` call and the others read them
  from a small cache, so k parallel graph branches cost one forward pass plus one batched generation.
  :meth:`ActionTokenLM.sample_reflections` offers the same batch directly.
- **rewrite**: the prompt with ALL candidates, the assistant turn forced to start with ``<rewrite>``,
  greedy continuation. An empty continuation is a documented fallback (the current answer is kept
  and the source says so), never an exception that would lose the run.

Missing action tokens in the tokenizer are a :class:`~speech_hands.errors.ConfigurationError`: the
checkpoint is not a Speech-Hands fine-tune. ``add_action_tokens=True`` adds them (untrained embeddings:
for fine-tuning or tests only).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from speech_hands.audio import AudioInput
from speech_hands.backends.loading import (
    TRANSFORMERS,
    LazyModel,
    Loaded,
    ModelRequest,
    dtype_name,
    model_name,
    resolve_device,
    resolve_dtype,
)
from speech_hands.errors import ConfigurationError
from speech_hands.reflection import action_tokens as at
from speech_hands.reflection.base import ReflectionInput
from speech_hands.text import NormalizerName, get_normalizer
from speech_hands.types import ACTION_TOKENS, Action, Hypothesis, Reflection, ToolKind

log = logging.getLogger(__name__)

Task = Literal["asr", "audioqa"]
WriteAnswer = Literal["never", "samples", "always"]


@dataclass(frozen=True)
class Generated:
    """One generated continuation: the cleaned text and its mean log-probability per token."""

    text: str
    score: float | None
    n_tokens: int


def action_token_ids(tokenizer: Any, *, source: str) -> dict[Action, int]:
    """The single-token ids of ``<internal>``, ``<external>``, ``<rewrite>``; a ConfigurationError
    naming the fix when the tokenizer does not have them as single tokens."""
    ids: dict[Action, int] = {}
    missing = []
    for action in Action:
        token_id = tokenizer.convert_tokens_to_ids(action.token)
        pieces = tokenizer.encode(action.token, add_special_tokens=False)
        if token_id is None or token_id == tokenizer.unk_token_id or list(pieces) != [token_id]:
            missing.append(action.token)
        else:
            ids[action] = int(token_id)
    if missing:
        raise ConfigurationError(
            f"the tokenizer of {source!r} has no single-token {', '.join(missing)}: it is not a model fine-tuned "
            f"with the Speech-Hands action tokens {ACTION_TOKENS}. Point the backend at the fine-tuned "
            "checkpoint, or pass add_action_tokens=True to add them (their embeddings are untrained: for "
            "fine-tuning or testing only, routing will be arbitrary)."
        )
    return ids


def add_action_tokens(tokenizer: Any, model: Any) -> int:
    """Add the three tokens as special tokens, growing the embeddings only when the new ids do not fit
    (Qwen checkpoints pad their vocabulary, so usually no resize is needed). Returns how many were added."""
    added = tokenizer.add_tokens(list(ACTION_TOKENS), special_tokens=True)
    embeddings = model.get_input_embeddings()
    if len(tokenizer) > embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return added


class ActionTokenLM:
    """The shared engine (see module docstring). Subclasses say how to load and how to encode a prompt."""

    #: whether the model hears the audio (the omni backend) or reads text only
    hears_audio: bool = False
    #: checked by assembly before constructing
    requires = (TRANSFORMERS,)

    def __init__(
        self,
        model: str,
        *,
        task: Task = "asr",
        name: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        device_map: str | dict[str, Any] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 0.95,
        system_prompt: str | None = None,
        add_action_tokens: bool = False,
        write_answer: WriteAnswer = "samples",
        batch_samples: bool = True,
        local_files_only: bool = False,
        attn_implementation: str | None = None,
        normalizer: NormalizerName = "english",
    ) -> None:
        if task not in ("asr", "audioqa"):
            raise ConfigurationError(f"task must be 'asr' or 'audioqa', got {task!r}")
        if temperature <= 0:
            raise ConfigurationError("temperature must be > 0 (it is the sampling temperature of majority draws)")
        self.model_spec = str(model)
        self.task: Task = task
        self.kind: ToolKind = "asr" if task == "asr" else "answer"
        self.name = name or model_name(model, drop_prefix="bundled:")
        self.device_spec = device
        self.dtype_spec = dtype
        self.device_map = device_map
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.system_prompt = system_prompt
        self.add_action_tokens = add_action_tokens
        self.write_answer: WriteAnswer = write_answer
        self.batch_samples = batch_samples
        self.local_files_only = local_files_only
        self.attn_implementation = attn_implementation
        self._normalize = get_normalizer(normalizer)
        self._model = LazyModel(self._model_request)
        self._draws: OrderedDict[str, list[Reflection]] = OrderedDict()
        self._draws_lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    def _load(self, device: str, dtype: Any) -> Loaded:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self) -> Loaded:
        """Load (or fetch the process-wide copy of) the model now; later calls are free."""
        return self._model.get()

    def _model_request(self) -> ModelRequest:
        TRANSFORMERS.check()  # the install hint comes before any device error
        device = resolve_device(self.device_spec)
        dtype = resolve_dtype(self.dtype_spec, device)
        key = (
            type(self).__name__,
            self.model_spec,
            device,
            dtype_name(dtype),
            repr(self.device_map),
            self.add_action_tokens,
            self.attn_implementation,
        )
        return ModelRequest(key, lambda: self._load(device, dtype))

    def _from_pretrained_kwargs(self, dtype: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": self.local_files_only}
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
        if self.attn_implementation is not None:
            kwargs["attn_implementation"] = self.attn_implementation
        return kwargs

    def _finish_load(self, model: Any, tokenizer: Any, device: str, **extras: Any) -> Loaded:
        """Place the model, check / add the action tokens, and package everything for calls."""
        if self.device_map is None:
            model.to(device)
        model.eval()
        if self.add_action_tokens:
            added = add_action_tokens(tokenizer, model)
            if added:
                log.warning(
                    "added %d action token(s) to %s: their embeddings are untrained (fine-tuning / tests only)",
                    added,
                    self.model_spec,
                )
        ids = action_token_ids(tokenizer, source=self.model_spec)
        if getattr(tokenizer, "chat_template", None) is None and extras.get("processor") is None:
            raise ConfigurationError(
                f"{self.model_spec!r} has no chat template: use a chat / instruct checkpoint (the reflection "
                "prompt is a chat turn), or set tokenizer.chat_template before loading"
            )
        return Loaded(model=model, extras={"tokenizer": tokenizer, "action_ids": ids, **extras})

    @property
    def action_ids(self) -> dict[Action, int]:
        return self.load().extras["action_ids"]

    def info(self) -> dict[str, Any]:
        loaded = self.load()
        param = next(loaded.model.parameters())
        return {
            "name": self.name,
            "model": self.model_spec,
            "task": self.task,
            "device": str(param.device),
            "dtype": dtype_name(param.dtype),
            "action_token_ids": {a.token: i for a, i in loaded.extras["action_ids"].items()},
        }

    # ------------------------------------------------------------------ encoding (subclass hooks)

    def _messages(self, prompt: str, audio: AudioInput | None) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": prompt})
        return messages

    def _encode(
        self, loaded: Loaded, prompts: Sequence[str], audios: Sequence[AudioInput | None], prefix: Sequence[str]
    ) -> Any:
        """Tensors for a batch of chat turns, each followed by its assistant ``prefix`` (left padding)."""
        tokenizer = loaded.extras["tokenizer"]
        texts = [
            tokenizer.apply_chat_template(self._messages(p, a), add_generation_prompt=True, tokenize=False) + pre
            for p, a, pre in zip(prompts, audios, prefix)
        ]
        tokenizer.padding_side = "left"
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    def _to_model(self, loaded: Loaded, inputs: Any) -> dict[str, Any]:
        """Move a batch to the model's input device; float features take the model's dtype."""
        model = loaded.model
        device = model.get_input_embeddings().weight.device
        dtype = model.get_input_embeddings().weight.dtype
        out = {}
        for key, value in dict(inputs).items():
            if hasattr(value, "to"):
                value = value.to(device)
                if value.is_floating_point():
                    value = value.to(dtype)
            out[key] = value
        return out

    # ------------------------------------------------------------------ model calls

    def first_token(self, prompt: str, audio: AudioInput | None = None) -> at.FirstToken:
        """The first generated position for this prompt: the three action logits (log-probabilities
        over the full vocabulary), the unconstrained argmax token and the action tokens' mass."""
        import torch

        loaded = self.load()
        tokenizer = loaded.extras["tokenizer"]
        ids = [loaded.extras["action_ids"][a] for a in at.ACTIONS]
        with loaded.lock, torch.inference_mode():
            inputs = self._to_model(loaded, self._encode(loaded, [prompt], [audio], [""]))
            logits = loaded.model(**inputs, use_cache=False).logits[0, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = logprobs[ids]
        raw = tokenizer.convert_ids_to_tokens(int(torch.argmax(logits)))
        return at.FirstToken(
            logits=tuple(float(v) for v in chosen),  # type: ignore[arg-type]
            raw_token=str(raw),
            action_mass=float(torch.exp(torch.logsumexp(chosen, dim=0))),
        )

    def _generate(
        self,
        prompts: Sequence[str],
        audios: Sequence[AudioInput | None],
        prefixes: Sequence[str],
        *,
        sample: bool,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[Generated]:
        """Continue each chat turn after its prefix: greedy, or sampled (temperature, top-p) with a
        fixed seed. The global torch RNG is forked, so seeding here disturbs nobody else."""
        import torch

        transformers = TRANSFORMERS.import_module()
        loaded = self.load()
        model, tokenizer = loaded.model, loaded.extras["tokenizer"]
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
        )
        config = transformers.GenerationConfig(
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            do_sample=sample,
            temperature=self.temperature if sample else None,
            top_p=self.top_p if sample else None,
            top_k=None,
            eos_token_id=eos,
            pad_token_id=pad,
            output_scores=True,
            return_dict_in_generate=True,
        )
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with loaded.lock, torch.inference_mode(), torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            inputs = self._to_model(loaded, self._encode(loaded, prompts, audios, prefixes))
            out = model.generate(**inputs, generation_config=config)
            steps = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        start = inputs["input_ids"].shape[1]
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        results = []
        for row, scores in zip(out.sequences[:, start:].tolist(), steps.float().tolist()):
            n = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
            kept = scores[: min(n + 1, len(scores))]  # the end token's probability counts, as in Whisper
            text = at.clean_answer(tokenizer.decode(row[:n], skip_special_tokens=True))
            score = sum(kept) / len(kept) if kept else None
            results.append(Generated(text=text, score=score, n_tokens=n))
        return results

    # ------------------------------------------------------------------ the OmniBackend / policy surface

    def _writes(self, sample: bool) -> bool:
        return self.write_answer == "always" or (self.write_answer == "samples" and sample)

    def _reflection(self, inp: ReflectionInput, first: at.FirstToken, action: Action, answer: str | None) -> Reflection:
        return at.build_reflection(inp, first, action, answer, policy=self.name, normalize=self._normalize)

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        """The first-token decision (``sample=False``) or one majority-sampling draw (``sample=True``)."""
        prompt = at.reflection_prompt(inp, self.kind)
        if sample and self.batch_samples and inp.n_samples > 1:
            return self._cached_draws(inp, prompt)[inp.sample_index]
        first = self.first_token(prompt, inp.audio if self.hears_audio else None)
        seed = at.draw_seed(inp.seed, inp.round, inp.sample_index, self._salt(prompt))
        action = at.draw_action(first, seed=seed, temperature=self.temperature) if sample else at.decide(first)
        answer = None
        if self._writes(sample):
            audio = inp.audio if self.hears_audio else None
            answer = self._generate([prompt], [audio], [action.token], sample=sample, seed=seed)[0].text
        return self._reflection(inp, first, action, answer)

    def sample_reflections(self, inp: ReflectionInput, k: int) -> list[Reflection]:
        """k majority-sampling draws in one batch: one forward pass for the action probabilities, k
        seeded action draws, and (when answers are written) one batched sampled ``generate``."""
        prompt = at.reflection_prompt(inp, self.kind)
        return self._draw_batch(inp, prompt, k)

    @staticmethod
    def _salt(prompt: str) -> str:
        return hashlib.sha256(prompt.encode()).hexdigest()[:16]

    def _draw_batch(self, inp: ReflectionInput, prompt: str, k: int) -> list[Reflection]:
        audio = inp.audio if self.hears_audio else None
        first = self.first_token(prompt, audio)
        salt = self._salt(prompt)
        actions = [
            at.draw_action(first, seed=at.draw_seed(inp.seed, inp.round, i, salt), temperature=self.temperature)
            for i in range(k)
        ]
        answers: list[str | None] = [None] * k
        if self._writes(True):
            seed = at.draw_seed(inp.seed, inp.round, -1, salt)
            generated = self._generate([prompt] * k, [audio] * k, [a.token for a in actions], sample=True, seed=seed)
            answers = [g.text for g in generated]
        return [
            self._reflection(replace(inp, sample_index=i, n_samples=k), first, action, answer)
            for i, (action, answer) in enumerate(zip(actions, answers))
        ]

    def _cached_draws(self, inp: ReflectionInput, prompt: str) -> list[Reflection]:
        key = f"{inp.audio.id}|{inp.round}|{inp.seed}|{inp.n_samples}|{self._salt(prompt)}"
        with self._draws_lock:
            draws = self._draws.get(key)
        if draws is None:
            loaded = self.load()
            with loaded.lock:  # the first branch computes the batch, the others wait and reuse it
                with self._draws_lock:
                    draws = self._draws.get(key)
                if draws is None:
                    draws = self._draw_batch(inp, prompt, inp.n_samples)
                    with self._draws_lock:
                        self._draws[key] = draws
                        while len(self._draws) > 32:
                            self._draws.popitem(last=False)
        return draws

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        """Continue after ``<rewrite>`` with ALL candidates in the prompt (greedy)."""
        prompt = at.rewrite_prompt(inp, self.kind)
        audio = inp.audio if self.hears_audio else None
        out = self._generate([prompt], [audio], [Action.REWRITE.token], sample=False)[0]
        if not out.text:
            current = inp.internal.top.text if inp.internal is not None and inp.internal.top is not None else ""
            log.warning("%s wrote nothing after <rewrite>; keeping the current answer", self.name)
            return Hypothesis(text=current, score=None, source=f"rewrite:{self.name}:empty-output-kept-current")
        return Hypothesis(text=out.text, score=out.score, source=f"rewrite:{self.name}")
