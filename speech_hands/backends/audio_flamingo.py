"""Audio Flamingo 3 (the paper's external audio-QA tool) as a CaptionBackend, through transformers.

``AudioFlamingo3ForConditionalGeneration.from_pretrained(path_or_hub_id)`` (e.g. ``nvidia/audio-flamingo-3-hf``)
with its own processor, which cuts audio into 30 s windows itself (up to ``max_audio_len``, 10 minutes).

``caption(audio, question)`` asks for a caption when there is no question, else the question (with its
options, prompts in ``speech_hands/prompts/``). It returns the greedy 1-best, or with ``num_samples > 1``
that many sampled answers (the paper samples AF3 5 times at temperature 0.8, top-p 0.95) as a list
ordered by their mean log-probability per token, duplicates merged. Sampling uses a fixed ``seed``
(forked torch RNG) so reruns are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from speech_hands.audio import AudioInput
from speech_hands.backends.loading import (
    TRANSFORMERS,
    LazyModel,
    Loaded,
    ModelRequest,
    dtype_name,
    resolve_device,
    resolve_dtype,
)
from speech_hands.errors import ConfigurationError
from speech_hands.prompts import audio_caption_prompt
from speech_hands.reflection.action_tokens import clean_answer
from speech_hands.types import Hypothesis


class AudioFlamingo3:
    """Captioning / audio question answering with Audio Flamingo 3."""

    #: checked by assembly before constructing
    requires = (TRANSFORMERS,)

    def __init__(
        self,
        model: str = "nvidia/audio-flamingo-3-hf",
        *,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        device_map: str | dict[str, Any] | None = None,
        max_new_tokens: int = 256,
        num_samples: int = 1,
        temperature: float = 0.8,
        top_p: float = 0.95,
        seed: int = 0,
        local_files_only: bool = False,
    ) -> None:
        if num_samples < 1:
            raise ConfigurationError("num_samples must be >= 1")
        self.model_spec = str(model)
        self.name = name or "af3"
        self.device_spec = device
        self.dtype_spec = dtype
        self.device_map = device_map
        self.max_new_tokens = max_new_tokens
        self.num_samples = num_samples
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.local_files_only = local_files_only
        self._model = LazyModel(self._model_request)

    def _load(self, device: str, dtype: Any) -> Loaded:
        transformers = TRANSFORMERS.import_module()
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": self.local_files_only}
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
        try:
            model = transformers.AudioFlamingo3ForConditionalGeneration.from_pretrained(self.model_spec, **kwargs)
            processor = transformers.AutoProcessor.from_pretrained(
                self.model_spec, local_files_only=self.local_files_only
            )
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot load Audio Flamingo 3 from {self.model_spec!r} ({type(exc).__name__}: {exc}). Use the "
                "transformers-format checkpoint (nvidia/audio-flamingo-3-hf, or a local copy of it), not the "
                "original NVIDIA repository layout."
            ) from exc
        if self.device_map is None:
            model.to(device)
        model.eval()
        return Loaded(model=model, extras={"processor": processor})

    def load(self) -> Loaded:
        """Load (or fetch the process-wide copy of) the model now; later calls are free."""
        return self._model.get()

    def _model_request(self) -> ModelRequest:
        TRANSFORMERS.check()  # the install hint comes before any device error
        device = resolve_device(self.device_spec)
        dtype = resolve_dtype(self.dtype_spec, device)
        key = ("af3", self.model_spec, device, dtype_name(dtype), repr(self.device_map))
        return ModelRequest(key, lambda: self._load(device, dtype))

    def _inputs(self, loaded: Loaded, prompts: Sequence[str], audios: Sequence[AudioInput]) -> dict[str, Any]:
        processor = loaded.extras["processor"]
        conversations = [
            [{"role": "user", "content": [{"type": "text", "text": p}, {"type": "audio", "audio": "in-memory"}]}]
            for p in prompts
        ]
        texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        # no padding= here: it would reach the feature extractor too, which must pad to its 30 s window
        batch = processor(text=texts, audio=[a.require_samples() for a in audios], return_tensors="pt")
        embeddings = loaded.model.get_input_embeddings().weight
        out = {}
        for key, value in dict(batch).items():
            value = value.to(embeddings.device)
            out[key] = value.to(embeddings.dtype) if value.is_floating_point() else value
        return out

    def _generate(
        self, audios: Sequence[AudioInput], prompts: Sequence[str], *, samples: int
    ) -> list[list[tuple[str, float | None]]]:
        import torch

        transformers = TRANSFORMERS.import_module()
        loaded = self.load()
        model, processor = loaded.model, loaded.extras["processor"]
        tokenizer = processor.tokenizer
        sample = samples > 1
        eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
        config = transformers.GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=sample,
            temperature=self.temperature if sample else None,
            top_p=self.top_p if sample else None,
            top_k=None,
            num_return_sequences=samples,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
            output_scores=True,
            return_dict_in_generate=True,
        )
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with loaded.lock, torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            inputs = self._inputs(loaded, prompts, audios)
            out = model.generate(**inputs, generation_config=config)
            steps = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        start = inputs["input_ids"].shape[1]
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        rows = []
        for seq, scores in zip(out.sequences[:, start:].tolist(), steps.float().tolist()):
            n = next((i for i, t in enumerate(seq) if t in eos_ids), len(seq))
            kept = scores[: min(n + 1, len(scores))]
            rows.append(
                (
                    clean_answer(tokenizer.decode(seq[:n], skip_special_tokens=True)),
                    sum(kept) / len(kept) if kept else None,
                )
            )
        return [rows[i * samples : (i + 1) * samples] for i in range(len(audios))]

    def _hypotheses(self, drawn: list[tuple[str, float | None]]) -> list[Hypothesis]:
        best: dict[str, float | None] = {}
        for text, score in drawn:
            if text and (text not in best or (score or -1e9) > (best[text] or -1e9)):
                best[text] = score
        ordered = sorted(best.items(), key=lambda kv: -(kv[1] if kv[1] is not None else -1e9))
        return [Hypothesis(text=t, score=s, source=self.name, rank=i) for i, (t, s) in enumerate(ordered)]

    def caption(self, audio: AudioInput, question: str | None = None) -> list[Hypothesis]:
        """The answer to ``question`` about the audio (a caption when there is none): 1-best, or the
        ``num_samples`` sampled answers, best first."""
        return self.caption_batch([audio], question)[0]

    def caption_batch(self, audios: Sequence[AudioInput], question: str | None = None) -> list[list[Hypothesis]]:
        """Answers for several inputs in one padded batch (same question for all)."""
        prompt = audio_caption_prompt(question)
        drawn = self._generate(audios, [prompt] * len(audios), samples=self.num_samples)
        return [self._hypotheses(d) for d in drawn]
