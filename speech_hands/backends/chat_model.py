"""``LocalChatModel``: a langchain-core chat model over a local transformers causal LM.

What the voice assistant (and anything else that takes a ``BaseChatModel``) needs from a small local
model: the model's own chat template over the whole conversation (system, human, AI and tool turns),
greedy decoding by default (``temperature > 0`` samples, seeded), ``max_new_tokens``, stop strings,
token usage in ``usage_metadata`` and the finish reason in ``response_metadata``. One process-wide
copy of the weights per (model, device, dtype) (:func:`speech_hands.backends.loading.shared_model`),
and one lock around ``generate``: graph branches on several threads share the model safely.

    from speech_hands.backends.local_llm import load_chat_model
    chat = load_chat_model("bundled:qwen2.5-0.5b", max_new_tokens=64)
    reply = chat.invoke([("system", "Answer briefly."), ("human", "My name is Ada.")])
    reply.content, reply.usage_metadata   # text; {'input_tokens': .., 'output_tokens': .., 'total_tokens': ..}

Weights come from :func:`speech_hands.backends.llm_weights.load_causal_lm` (``bundled:qwen2.5-0.5b``, a
``.gguf`` file, a local directory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from speech_hands.backends.loading import Loaded, dtype_name, resolve_device, resolve_dtype, shared_model
from speech_hands.errors import ConfigurationError


def _content_text(message: BaseMessage) -> str:
    """A message's text: a string, or the text blocks of a content list (other blocks are dropped)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages -> the ``{"role", "content"}`` dicts a chat template reads."""
    out = []
    for m in messages:
        if isinstance(m, SystemMessage):
            role = "system"
        elif isinstance(m, HumanMessage):
            role = "user"
        elif isinstance(m, AIMessage):
            role = "assistant"
        elif isinstance(m, ToolMessage):
            role = "tool"
        elif isinstance(m, ChatMessage):
            role = {"human": "user", "ai": "assistant"}.get(m.role, m.role)
        else:
            raise ConfigurationError(f"LocalChatModel: unsupported message type {type(m).__name__}")
        out.append({"role": role, "content": _content_text(m)})
    if not out:
        raise ConfigurationError("LocalChatModel: no messages to answer")
    return out


class LocalChatModel(BaseChatModel):
    """A local transformers chat LLM as a langchain-core chat model (see module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model: str = Field(description="bundled:qwen2.5-0.5b, a .gguf file, a local transformers directory or a hub id")
    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, description="0: greedy (the default); > 0: sampled")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, description="sampling seed (temperature > 0)")
    device: str = "auto"
    dtype: str = "auto"
    show_progress: bool = Field(default=True, description="rich progress while the bundled model is converted")

    _loaded: Loaded | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "speech-hands-local-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }

    def load(self) -> Loaded:
        """Load the weights now (the process-wide copy, when one is loaded already)."""
        if self._loaded is None:
            from speech_hands.backends.llm_weights import LLM, load_causal_lm

            LLM.check()
            device = resolve_device(self.device)
            dtype = resolve_dtype(self.dtype, device)

            def load() -> Loaded:
                model, tokenizer = load_causal_lm(
                    self.model, device=device, dtype=self.dtype, show_progress=self.show_progress
                )
                if getattr(tokenizer, "chat_template", None) is None:
                    raise ConfigurationError(f"{self.model!r} has no chat template: use a chat / instruct model")
                return Loaded(model=model, extras={"tokenizer": tokenizer})

            self._loaded = shared_model(("LocalChatModel", self.model, device, dtype_name(dtype)), load)
        return self._loaded

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        import torch

        loaded = self.load()
        model, tokenizer = loaded.model, loaded.extras["tokenizer"]
        max_new = int(kwargs.get("max_new_tokens", self.max_new_tokens))
        temperature = float(kwargs.get("temperature", self.temperature))
        inputs = tokenizer.apply_chat_template(
            to_chat_dicts(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        device = model.get_input_embeddings().weight.device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        options: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": temperature > 0}
        if temperature > 0:
            options |= {"temperature": temperature, "top_p": self.top_p, "top_k": None}
        else:
            options |= {"temperature": None, "top_p": None, "top_k": None}
        if tokenizer.pad_token_id is not None:
            options["pad_token_id"] = tokenizer.pad_token_id
        if stop:
            options |= {"stop_strings": list(stop), "tokenizer": tokenizer}
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with loaded.lock, torch.inference_mode(), torch.random.fork_rng(devices=devices):
            if temperature > 0 and self.seed is not None:
                torch.manual_seed(self.seed)
            out = model.generate(**inputs, **options)
        n_in = int(inputs["input_ids"].shape[1])
        new = out[0, n_in:].tolist()
        ended = next((i for i, t in enumerate(new) if t in eos_ids), None)
        kept = new[:ended] if ended is not None else new
        text = tokenizer.decode(kept, skip_special_tokens=True)
        finish = "stop" if ended is not None else "length"
        for s in stop or ():
            if s in text:
                text, finish = text[: text.index(s)], "stop"
        n_out = len(new) if ended is None else ended + 1
        message = AIMessage(
            content=text.strip(),
            usage_metadata={"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out},
            response_metadata={"model_name": self.model, "finish_reason": finish},
        )
        return ChatResult(generations=[ChatGeneration(message=message, generation_info={"finish_reason": finish})])
