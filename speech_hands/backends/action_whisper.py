"""The action-token Whisper: a Whisper model fine-tuned to reflect with ``<internal>`` / ``<external>`` / ``<rewrite>``.

This is the paper's design at small scale (docs/reflector.md, "Fine-tuned action-token Whisper"): the
model that makes the internal prediction is the one that reflects. The external candidates go into
Whisper's previous-text context (``<|startofprev|>`` ...); after the start-of-transcript prefix the
first generated token is restricted to the three action tokens, whose probabilities are all kept
(:class:`~speech_hands.reflection.action_tokens.FirstToken`, decided by
:mod:`speech_hands.reflection.decision`); after ``<rewrite>`` the same model decodes the rewritten
transcript (greedy), from the same context.

**Sequence** (training and inference alike, :meth:`ActionTokenizer.prefix` / :meth:`~ActionTokenizer.answer`)::

    <|startofprev|> " h1 | h2 | ... [|| own]"  <|startoftranscript|> [<|en|> <|transcribe|>] <|notimestamps|>
    <action> " text" <|endoftext|>

``h1 ...`` are the external hypotheses (each tool's first ``n_best``, tool by tool, duplicates removed);
``|| own`` (the internal first pass) is added when the checkpoint was trained with
``context="externals+internal"``. The context keeps its last 223 tokens, as Whisper does with a
previous-text prompt.

**Checkpoint** (a folder, written by ``speech-hands finetune``, read by :class:`ActionWhisperReflector`):

- ``reflector.json``: format and version, the action-token ids, the context settings, the source model
  (spec, sha256 of its weights, architecture), the training settings and data digest, ``model.pt``'s sha256;
- ``model.pt``: an openai-whisper checkpoint (``{"dims", "model_state_dict"}``) whose vocabulary has
  the three action tokens appended (``n_vocab`` + 3; the new embedding rows started as the embeddings
  of the words "internal", "external", "rewrite"). ``whisper.load_model`` would guess the tokenizer from
  ``n_vocab`` and guess wrong, so the tokenizer comes from the folder:
- ``tokenizer.json`` + the ``.tiktoken`` vocabulary: Whisper's tiktoken tokenizer with every special
  token's id, the three action tokens included.

A folder without the three tokens, or fine-tuned from a Whisper of another size than the internal model,
is refused with the fix (:func:`check_internal_size`). Audio over one 30 s window, or no audio, raises
(the graph then counts the reflection as an ``<internal>`` fallback and says why in ``notes``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from speech_hands.audio import SAMPLE_RATE
from speech_hands.backends.whisper_torch import WhisperSize, ct2_size
from speech_hands.errors import AudioError, ConfigurationError
from speech_hands.reflection import action_tokens as at
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.decision import ACTIONS, accept_rewrite
from speech_hands.text import get_normalizer
from speech_hands.types import ACTION_TOKENS, Action, Hypothesis, Reflection

log = logging.getLogger(__name__)

FORMAT = "speech-hands-action-whisper"
FORMAT_VERSION = 1
CHECKPOINT_FILE = "reflector.json"
MODEL_FILE = "model.pt"
TOKENIZER_FILE = "tokenizer.json"
#: the words whose embeddings the new rows start from (same order as ACTIONS)
SEED_WORDS = (" internal", " external", " rewrite")
SEPARATOR = " |"
OWN_SEPARATOR = " ||"
MAX_WINDOW_S = 30.0
ContextKind = Literal["externals", "externals+internal"]
FINETUNE_HINT = "fine-tune one with `speech-hands finetune --data SFT_DIR --model bundled:base --out CKPT`"

_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class ContextSpec(BaseModel):
    """What goes into the previous-text context."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_best: int = Field(default=5, ge=1, description="external hypotheses per tool")
    kind: ContextKind = "externals"


def context_text(hypotheses_by_tool: Sequence[Sequence[str]], internal: str | None, spec: ContextSpec) -> str:
    """The previous-text context: external hypotheses (each tool's first ``n_best``, duplicates
    removed) joined by ``|``, then ``|| own`` for ``externals+internal``."""
    seen: dict[str, None] = {}
    for hyps in hypotheses_by_tool:
        for h in list(hyps)[: spec.n_best]:
            if h.strip():
                seen.setdefault(" ".join(h.split()), None)
    text = SEPARATOR.join(f" {h}" for h in seen) if seen else " (none)"
    if spec.kind == "externals+internal":
        text += f"{OWN_SEPARATOR} {' '.join((internal or '').split())}"
    return text


# ------------------------------------------------------------------------------------------- tokenizer


def _read_ranks(path: Path) -> dict[bytes, int]:
    with path.open(encoding="utf-8") as fh:
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in fh if line.strip())}


class ActionTokenizer:
    """openai-whisper's tiktoken tokenizer with the three action tokens appended as special tokens."""

    def __init__(
        self, ranks: dict[bytes, int], specials: dict[str, int], *, vocabulary: str, multilingual: bool, languages: int
    ) -> None:
        import tiktoken
        from whisper.tokenizer import Tokenizer

        missing = [t for t in ACTION_TOKENS if t not in specials]
        if missing:
            raise ConfigurationError(f"tokenizer lacks the action tokens {missing}; {FINETUNE_HINT}")
        self.vocabulary = vocabulary
        self.multilingual = multilingual
        self.languages = languages
        self.specials = dict(specials)
        self.n_vocab = max(specials.values()) + 1
        encoding = tiktoken.Encoding(
            name=f"{vocabulary}+actions",
            explicit_n_vocab=self.n_vocab,
            pat_str=_PAT_STR,
            mergeable_ranks=ranks,
            special_tokens=self.specials,
        )
        self._ranks = ranks
        self.whisper = Tokenizer(
            encoding=encoding,
            num_languages=languages,
            language="en" if multilingual else None,
            task="transcribe" if multilingual else None,
        )
        self.action_ids: tuple[int, int, int] = tuple(self.specials[a.token] for a in ACTIONS)  # type: ignore[assignment]

    @classmethod
    def for_model(cls, multilingual: bool, languages: int) -> ActionTokenizer:
        """Whisper's own tokenizer for a model of this kind, plus the three action tokens."""
        from whisper.tokenizer import get_encoding

        name = "multilingual" if multilingual else "gpt2"
        base = get_encoding(name, languages)
        specials = dict(base._special_tokens)
        for i, token in enumerate(ACTION_TOKENS):
            specials[token] = base.n_vocab + i
        return cls(
            dict(base._mergeable_ranks), specials, vocabulary=name, multilingual=multilingual, languages=languages
        )

    @property
    def base_vocab(self) -> int:
        """The vocabulary size without the action tokens (the source model's ``n_vocab``)."""
        return min(self.action_ids)

    def save(self, folder: Path) -> None:
        import whisper

        source = Path(whisper.__file__).parent / "assets" / f"{self.vocabulary}.tiktoken"
        shutil.copyfile(source, folder / f"{self.vocabulary}.tiktoken")
        data = {
            "kind": "whisper-tiktoken",
            "vocabulary": f"{self.vocabulary}.tiktoken",
            "multilingual": self.multilingual,
            "num_languages": self.languages,
            "pat_str": _PAT_STR,
            "special_tokens": self.specials,
            "action_tokens": dict(zip(ACTION_TOKENS, self.action_ids)),
        }
        (folder / TOKENIZER_FILE).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> ActionTokenizer:
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise ConfigurationError(f"{folder} has no {TOKENIZER_FILE}; {FINETUNE_HINT}")
        data = json.loads(path.read_text(encoding="utf-8"))
        name = str(data["vocabulary"]).removesuffix(".tiktoken")
        return cls(
            _read_ranks(folder / data["vocabulary"]),
            {str(k): int(v) for k, v in data["special_tokens"].items()},
            vocabulary=name,
            multilingual=bool(data["multilingual"]),
            languages=int(data["num_languages"]),
        )

    # sequences -------------------------------------------------------------------------------------

    def encode_text(self, text: str) -> list[int]:
        return self.whisper.encoding.encode(text, disallowed_special=())

    def prefix(self, context: str, n_text_ctx: int = 448) -> list[int]:
        """``<|startofprev|>`` + the context's last tokens + the start-of-transcript sequence."""
        ctx = self.encode_text(context)[-(n_text_ctx // 2 - 1) :]
        return [self.whisper.sot_prev, *ctx, *self.whisper.sot_sequence_including_notimestamps]

    def answer(self, action: Action, text: str) -> list[int]:
        """The answer tokens: the action token, the text (leading space, as Whisper writes), end of text."""
        body = self.encode_text(" " + " ".join(text.split())) if text.strip() else []
        return [self.action_ids[ACTIONS.index(action)], *body, self.whisper.eot]

    def decode(self, ids: Sequence[int]) -> str:
        return self.whisper.decode([t for t in ids if t < self.whisper.eot]).strip()

    def token_text(self, token: int) -> str:
        return self.whisper.encoding.decode_single_token_bytes(token).decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------- the model


def add_action_tokens(model: Any, tokenizer: ActionTokenizer) -> None:
    """Append the three action-token rows to the token embedding (tied to the output layer), each
    initialised as the mean embedding of its seed word's tokens (never random noise)."""
    import torch

    emb = model.decoder.token_embedding
    old = emb.weight.data
    if old.shape[0] != tokenizer.base_vocab:
        raise ConfigurationError(
            f"the model's vocabulary ({old.shape[0]}) is not Whisper's {tokenizer.vocabulary} vocabulary "
            f"({tokenizer.base_vocab}); fine-tune from bundled:base, bundled:tiny.en or an openai-whisper checkpoint"
        )
    rows = [old[tokenizer.encode_text(word)].mean(dim=0) for word in SEED_WORDS]
    new = torch.nn.Embedding(old.shape[0] + len(rows), old.shape[1])
    new.weight.data = torch.cat([old, torch.stack(rows)], dim=0).to(old.dtype)
    model.decoder.token_embedding = new
    model.dims.n_vocab = new.weight.shape[0]


def decoder_hidden(decoder: Any, tokens: Any, audio: Any, *, kv_cache: dict | None = None, offset: int = 0) -> Any:
    """openai-whisper's ``TextDecoder.forward`` up to the final layer norm (no vocabulary projection),
    so callers project only the positions they need."""
    x = decoder.token_embedding(tokens) + decoder.positional_embedding[offset : offset + tokens.shape[-1]]
    x = x.to(audio.dtype)
    for block in decoder.blocks:
        x = block(x, audio, mask=decoder.mask, kv_cache=kv_cache)
    return decoder.ln(x)


def project(decoder: Any, hidden: Any) -> Any:
    """Vocabulary logits of hidden states (the output layer is the token embedding, tied)."""
    return (hidden @ decoder.token_embedding.weight.to(hidden.dtype).T).float()


def log_mel(samples: Any, n_mels: int) -> Any:
    """Whisper's log-mel features of one 30 s window (padded / trimmed)."""
    import torch
    import whisper

    audio = torch.from_numpy(samples) if not isinstance(samples, torch.Tensor) else samples
    return whisper.log_mel_spectrogram(whisper.pad_or_trim(audio.float()), n_mels)


def first_token_logprobs(model: Any, tokenizer: ActionTokenizer, prefixes: Sequence[Sequence[int]], audio: Any) -> Any:
    """Log-probabilities ``(batch, vocab)`` of the first generated position after each prefix
    (right-padded batch; causal attention never sees the padding)."""
    import torch

    lengths = [len(p) for p in prefixes]
    width = max(lengths)
    tokens = torch.full((len(prefixes), width), tokenizer.whisper.eot, dtype=torch.long)
    for i, p in enumerate(prefixes):
        tokens[i, : len(p)] = torch.tensor(p)
    hidden = decoder_hidden(model.decoder, tokens, audio)
    last = hidden[torch.arange(len(prefixes)), torch.tensor(lengths) - 1]
    return torch.log_softmax(project(model.decoder, last).double(), dim=-1)


def first_token(logprobs: Any, tokenizer: ActionTokenizer) -> at.FirstToken:
    """The :class:`FirstToken` of one row of :func:`first_token_logprobs`: the three action tokens'
    log-probabilities, their share of the mass; ``raw_token`` is the restricted (generated) token."""
    import torch

    values = tuple(float(logprobs[i]) for i in tokenizer.action_ids)
    mass = float(torch.exp(logprobs[list(tokenizer.action_ids)]).sum())
    chosen = max(range(3), key=lambda i: (values[i], -i))
    return at.FirstToken(logits=values, raw_token=ACTION_TOKENS[chosen], action_mass=min(mass, 1.0))  # type: ignore[arg-type]


def greedy_after(
    model: Any, tokenizer: ActionTokenizer, prefix: Sequence[int], action: Action, audio: Any, max_tokens: int = 224
) -> tuple[str, float | None]:
    """Greedy decoding after ``prefix + <action>`` until ``<|endoftext|>``: the text and its mean
    log-probability per token (end included). Special tokens other than the end are suppressed, and
    the end is not allowed first (Whisper's blank suppression)."""
    import torch

    dec = model.decoder
    tokens = [*prefix, tokenizer.action_ids[ACTIONS.index(action)]]
    budget = min(max_tokens, model.dims.n_text_ctx - len(tokens))
    eot = tokenizer.whisper.eot
    suppress = torch.zeros(model.dims.n_vocab, dtype=torch.bool)
    suppress[eot + 1 :] = True
    blank = tokenizer.encode_text(" ")
    cache, hooks = model.install_kv_cache_hooks()
    out: list[int] = []
    total = 0.0
    try:
        step_input = torch.tensor([tokens])
        offset = 0
        for step in range(max(budget, 0)):
            hidden = decoder_hidden(dec, step_input, audio, kv_cache=cache, offset=offset)
            offset += step_input.shape[1]
            logits = project(dec, hidden[:, -1])[0]
            logits[suppress] = -torch.inf
            if step == 0:
                logits[[eot, *blank]] = -torch.inf
            logprobs = torch.log_softmax(logits.double(), dim=-1)
            token = int(torch.argmax(logprobs))
            total += float(logprobs[token])
            if token == eot:
                break
            out.append(token)
            step_input = torch.tensor([[token]])
    finally:
        for hook in hooks:
            hook.remove()
    score = total / (len(out) + 1) if out else None
    return tokenizer.decode(out), score


# ------------------------------------------------------------------------------------------- checkpoint


class CheckpointInfo(BaseModel):
    """``reflector.json``: everything needed to load and check a fine-tuned action-token Whisper."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    name: str
    action_tokens: dict[str, int]
    context: ContextSpec
    source: dict[str, Any] = Field(description="the model fine-tuned from: spec, sha256, size")
    size: dict[str, int]
    model_sha256: str
    training: dict[str, Any] = Field(default_factory=dict)

    @property
    def whisper_size(self) -> WhisperSize:
        return WhisperSize(**self.size)


def is_checkpoint_dir(path: str | Path) -> bool:
    """Whether ``path`` is meant as a fine-tuned checkpoint (a folder) rather than a reflector artifact (JSON)."""
    p = Path(path).expanduser()
    return p.is_dir() or p.suffix in (".pt", ".bin")


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """``reflector.json`` of a checkpoint folder, refused with the fix when it is not one."""
    folder = Path(path).expanduser()
    if not folder.is_dir() or not (folder / CHECKPOINT_FILE).is_file():
        what = "a Whisper checkpoint without the action tokens" if folder.exists() else "not found"
        raise ConfigurationError(
            f"{folder}: {what} (no {CHECKPOINT_FILE}: not an action-token checkpoint); the reflector must have "
            f"the tokens {', '.join(ACTION_TOKENS)}: {FINETUNE_HINT}"
        )
    try:
        info = CheckpointInfo.model_validate_json((folder / CHECKPOINT_FILE).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigurationError(f"{folder / CHECKPOINT_FILE}: not a checkpoint description ({exc})") from exc
    if info.format != FORMAT or info.format_version != FORMAT_VERSION:
        raise ConfigurationError(f"{folder}: {info.format} v{info.format_version}; this version reads {FORMAT} v1")
    missing = [t for t in ACTION_TOKENS if t not in info.action_tokens]
    if missing:
        raise ConfigurationError(f"{folder}: the checkpoint lacks the action tokens {missing}; {FINETUNE_HINT}")
    return info


def write_checkpoint(
    folder: Path,
    model: Any,
    tokenizer: ActionTokenizer,
    *,
    context: ContextSpec,
    source: dict[str, Any],
    training: dict[str, Any],
) -> CheckpointInfo:
    """Write ``model.pt``, the tokenizer and ``reflector.json`` into ``folder`` (model.pt atomically)."""
    import os
    import tempfile

    import torch

    from speech_hands.backends.whisper_torch import sha256_path

    folder.mkdir(parents=True, exist_ok=True)
    dims = dict(vars(model.dims))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".model.pt.")
    os.close(fd)
    try:
        torch.save({"dims": dims, "model_state_dict": state}, tmp)
        os.replace(tmp, folder / MODEL_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    tokenizer.save(folder)
    size = WhisperSize(
        n_audio_layer=dims["n_audio_layer"],
        n_text_layer=dims["n_text_layer"],
        n_audio_state=dims["n_audio_state"],
        n_text_state=dims["n_text_state"],
    )
    info = CheckpointInfo(
        name=folder.resolve().name,
        action_tokens=dict(zip(ACTION_TOKENS, tokenizer.action_ids)),
        context=context,
        source=source,
        size=vars(size),
        model_sha256=sha256_path(folder / MODEL_FILE),
        training=training,
    )
    (folder / CHECKPOINT_FILE).write_text(info.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return info


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[Any, ActionTokenizer, CheckpointInfo]:
    """The fine-tuned Whisper (float32, eval mode), its tokenizer and its description."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    folder = Path(path).expanduser()
    info = read_checkpoint_info(folder)
    tokenizer = ActionTokenizer.load(folder)
    if dict(zip(ACTION_TOKENS, tokenizer.action_ids)) != info.action_tokens:
        raise ConfigurationError(f"{folder}: {TOKENIZER_FILE} and {CHECKPOINT_FILE} disagree on the action-token ids")
    data = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
    dims = ModelDimensions(**data["dims"])
    if dims.n_vocab <= max(tokenizer.action_ids):
        raise ConfigurationError(f"{folder}: the model's vocabulary has no rows for the action tokens; {FINETUNE_HINT}")
    model = Whisper(dims)
    model.load_state_dict(data["model_state_dict"], strict=True)
    return model.to(device=device, dtype=torch.float32).eval(), tokenizer, info


# ------------------------------------------------------------------------------------------- checks


def internal_size(predictor: Any) -> tuple[WhisperSize, str]:
    """The architecture of the agent's internal Whisper model, and its spec (for messages)."""
    from speech_hands.backends.weights import resolve_model

    spec = getattr(predictor, "model_spec", None)
    kind = type(predictor).__name__
    if kind == "FasterWhisperASR" and spec is not None:
        return ct2_size(resolve_model(spec)), spec
    if kind == "OpenAIWhisperASR" and spec is not None:
        model = predictor.load().model
        d = model.dims
        return WhisperSize(d.n_audio_layer, d.n_text_layer, d.n_audio_state, d.n_text_state), spec
    raise ConfigurationError(
        f"the fine-tuned action-token Whisper reflects for a Whisper internal model (faster-whisper or "
        f"openai-whisper); the internal model here is {getattr(predictor, 'name', kind)!r} ({kind})"
    )


def check_internal_size(info: CheckpointInfo, predictor: Any, where: str) -> None:
    """Refuse a checkpoint fine-tuned from a Whisper of another size than the internal model."""
    size, spec = internal_size(predictor)
    mine = info.whisper_size
    if size != mine:
        source = info.source.get("model", "?")
        raise ConfigurationError(
            f"checkpoint {where} was fine-tuned from {source} ({mine.describe()}), but the internal model "
            f"{spec} is {size.describe()}: the model that predicts must be the one that reflects. Use "
            f"--internal-model {source} (internal_model={source!r}), or fine-tune from {spec}: "
            f"`speech-hands finetune --data SFT_DIR --model {spec} --out CKPT`"
        )


# ------------------------------------------------------------------------------------------- the policy


@dataclass
class _Loaded:
    model: Any
    tokenizer: ActionTokenizer
    lock: threading.Lock


class ActionWhisperReflector:
    """The reflection policy and the rewrite of a fine-tuned action-token Whisper checkpoint.

    ``reflect``: the first token restricted to the three action tokens (all three probabilities kept;
    ``sample=True`` draws, seeded by ``(seed, round, sample_index, context)``). ``<external>`` names the
    first usable tool's top candidate. ``rewrite``: greedy decoding after ``<rewrite>`` from the same
    context (the training format). After a rewrite round the rewrite is accepted: the model was trained
    on first-round decisions only."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        internal: Any = None,
        device: str = "cpu",
        temperature: float = 1.0,
        normalizer: str = "english",
        max_tokens: int = 224,
    ) -> None:
        self.path = Path(checkpoint).expanduser().resolve()
        self.info = read_checkpoint_info(self.path)
        if internal is not None:
            check_internal_size(self.info, internal, str(self.path))
        self.name = f"action-whisper:{self.info.name}@{self.info.model_sha256[:8]}"
        self.device = device
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._normalize = get_normalizer(normalizer)  # type: ignore[arg-type]
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        self._features: OrderedDict[str, Any] = OrderedDict()

    def load(self) -> _Loaded:
        with self._load_lock:
            if self._loaded is None:
                model, tokenizer, _ = load_checkpoint(self.path, self.device)
                self._loaded = _Loaded(model, tokenizer, threading.Lock())
            return self._loaded

    # features ---------------------------------------------------------------------------------------

    def _audio_features(self, inp: ReflectionInput) -> Any:
        import torch

        samples = inp.audio.samples
        if samples is None:
            raise AudioError(f"{self.name} needs the audio (virtual input {inp.audio.id!r})")
        if len(samples) > MAX_WINDOW_S * SAMPLE_RATE + 1:
            raise AudioError(f"{self.name} reflects on one 30 s window; {inp.audio.id!r} is longer")
        key = inp.audio.ref.sha256 or hashlib.sha256(samples.tobytes()).hexdigest()
        loaded = self.load()
        with loaded.lock:
            hit = self._features.get(key)
            if hit is None:
                with torch.inference_mode():
                    mel = log_mel(samples, loaded.model.dims.n_mels).to(self.device)
                    hit = loaded.model.encoder(mel[None])
                self._features[key] = hit
                while len(self._features) > 4:
                    self._features.popitem(last=False)
            else:
                self._features.move_to_end(key)
        return hit

    def context(self, inp: ReflectionInput) -> str:
        original = inp.original_internal or inp.internal
        internal = original.top.text if original is not None and original.top is not None else ""
        hyps = [[h.text for h in o.hypotheses] for o in inp.externals if o.ok]
        return context_text(hyps, internal, self.info.context)

    # the Protocols ------------------------------------------------------------------------------------

    def first_token(self, inp: ReflectionInput) -> tuple[at.FirstToken, str]:
        """The model's own first token over the three action tokens for this input, and the token it
        would write unconstrained (its argmax over the whole vocabulary)."""
        import torch

        audio = self._audio_features(inp)
        loaded = self.load()
        prefix = loaded.tokenizer.prefix(self.context(inp), loaded.model.dims.n_text_ctx)
        with loaded.lock, torch.inference_mode():
            logprobs = first_token_logprobs(loaded.model, loaded.tokenizer, [prefix], audio)[0]
            top = int(torch.argmax(logprobs))
        return first_token(logprobs, loaded.tokenizer), loaded.tokenizer.token_text(top)

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        if inp.round > 0 and inp.previous_rewrites:
            return accept_rewrite(
                inp,
                policy=self.name,
                rationale="the fine-tuned model's rewrite is accepted (it was trained on first-round decisions)",
            )
        first, top = self.first_token(inp)
        if sample:
            seed = at.draw_seed(inp.seed, inp.round, inp.sample_index, self.context(inp))
            action = at.draw_action(first, seed=seed, temperature=self.temperature)
        else:
            action = at.decide(first)
        note = "" if top in ACTION_TOKENS else f"unconstrained, the model's most likely first token is {top!r}"
        return at.build_reflection(inp, first, action, None, policy=self.name, normalize=self._normalize, note=note)

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        """Greedy decoding after ``<rewrite>``; an empty output keeps the current answer (and says so)."""
        import torch

        audio = self._audio_features(inp)
        loaded = self.load()
        prefix = loaded.tokenizer.prefix(self.context(inp), loaded.model.dims.n_text_ctx)
        with loaded.lock, torch.inference_mode():
            text, score = greedy_after(loaded.model, loaded.tokenizer, prefix, Action.REWRITE, audio, self.max_tokens)
        if not text:
            current = inp.internal.top.text if inp.internal is not None and inp.internal.top is not None else ""
            return Hypothesis(text=current, score=None, source=f"rewrite:{self.name}:empty-output-kept-current")
        return Hypothesis(text=text, score=score, source=f"rewrite:{self.name}")
