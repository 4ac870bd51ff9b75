"""Models behind an OpenAI-compatible HTTP API (vLLM serving Qwen2.5-Omni, or any audio chat model).

Two backends over one small HTTP client (httpx, timeouts, retries with exponential backoff):

- :class:`OpenAIServerOmni`: the omni role over ``POST /v1/chat/completions``. The audio goes in the
  user message as ``{"type": "input_audio", "input_audio": {"data": <base64 WAV>, "format": "wav"}}``.
  The first-token decision comes from ``logprobs`` / ``top_logprobs`` of the first generated token:
  the action tokens' log-probabilities renormalised over the three (see
  :func:`speech_hands.reflection.action_tokens.from_top_logprobs`: an action token missing from the
  server's top-k list gets probability 0 and the rationale names it; none of the three in the list is a
  :class:`~speech_hands.errors.ModelOutputError`). vLLM caps ``top_logprobs`` at 20 by default
  (``--max-logprobs`` raises it). The decision asks for greedy decoding; a majority-sampling draw asks
  the server to sample (``temperature``, ``seed`` per draw) and takes the generated action token as the
  draw (when the sampled first token is not an action token, the draw falls back to a local seeded
  draw from the renormalised probabilities, and the rationale says so).
  ``rewrite`` continues an assistant message that starts with ``<rewrite>`` using vLLM's
  ``continue_final_message`` extension (``prefill=False`` for servers without it: the reply is asked
  for plainly and a leading action token is stripped).
- :class:`OpenAIServerASR`: an ASR tool over ``POST /v1/audio/transcriptions`` (multipart WAV upload).
  That API returns one transcript, so the N-best list has one entry; with ``response_format=verbose_json``
  its score is the mean of the segments' ``avg_logprob`` when the server reports them.

Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried ``max_retries`` times
with backoff ``backoff_s * 2**attempt``; then a :class:`~speech_hands.errors.ToolFailure` says what
happened, which the graph records as the tool's error. Other HTTP errors (400, 401, 404) are not
retried: the message carries the server's answer. The API key comes from ``api_key`` or
``$OPENAI_API_KEY`` (vLLM accepts any key unless started with ``--api-key``).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import time
from typing import Any

import numpy as np

from speech_hands.audio import SAMPLE_RATE, AudioInput
from speech_hands.backends.loading import OptionalExtra, model_name
from speech_hands.errors import ConfigurationError, ModelOutputError, RemoteUnavailable, ToolFailure
from speech_hands.prompts import asr_transcription_prompt, audioqa_answer_prompt
from speech_hands.reflection import action_tokens as at
from speech_hands.reflection.base import ReflectionInput
from speech_hands.text import NormalizerName, get_normalizer
from speech_hands.types import Action, Hypothesis, Reflection, ToolKind

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

HTTPX = OptionalExtra(module="httpx", package="httpx", extra="server", what="an OpenAI-compatible server backend")


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV of mono float32 samples (what every server accepts)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def audio_content(samples: np.ndarray) -> dict[str, Any]:
    """An ``input_audio`` content part of a chat message."""
    data = base64.b64encode(wav_bytes(samples)).decode("ascii")
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


class HTTPClient:
    """POST JSON / multipart with timeouts and bounded, backed-off retries."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        httpx = HTTPX.import_module()  # usually there already: langgraph depends on it
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s), headers={"Authorization": f"Bearer {key}"}
        )
        self.attempts = 0  # total requests sent (tests and logs read it)

    def post(
        self, path: str, *, json: dict[str, Any] | None = None, files: Any = None, data: Any = None
    ) -> dict[str, Any]:
        import httpx

        last = ""
        unreachable = False  # the last failure was the connection itself (worth a retry by the graph)
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.attempts += 1
            try:
                response = self._http.post(path, json=json, files=files, data=data)
            except httpx.TimeoutException:
                last, unreachable = f"no answer within {self.timeout_s} s", True
                continue
            except httpx.TransportError as exc:
                last, unreachable = f"{type(exc).__name__}: {exc}", True
                continue
            if response.status_code in RETRY_STATUS:
                last, unreachable = f"HTTP {response.status_code}: {response.text[:300]}", False
                continue
            if response.status_code >= 400:
                raise ToolFailure(f"{self.base_url}{path} answered HTTP {response.status_code}: {response.text[:500]}")
            try:
                return response.json()
            except ValueError as exc:
                raise ToolFailure(f"{self.base_url}{path} answered non-JSON: {response.text[:200]!r}") from exc
        failure = RemoteUnavailable if unreachable else ToolFailure
        raise failure(f"{self.base_url}{path} failed after {self.max_retries + 1} attempts (last: {last})")

    def close(self) -> None:
        self._http.close()


class OpenAIServerOmni:
    """The omni role served over an OpenAI-compatible chat API (see module docstring)."""

    #: reached over the network: the graph's nodes that call it retry on connection errors
    remote = True

    #: checked by assembly before constructing
    requires = (HTTPX,)

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://localhost:8000/v1",
        task: str = "asr",
        name: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 0.95,
        top_logprobs: int = 20,
        system_prompt: str | None = None,
        write_answer: str = "samples",
        prefill: bool = True,
        normalizer: NormalizerName = "english",
    ) -> None:
        if task not in ("asr", "audioqa"):
            raise ConfigurationError(f"task must be 'asr' or 'audioqa', got {task!r}")
        self.model = model
        self.task = task
        self.kind: ToolKind = "asr" if task == "asr" else "answer"
        self.name = name or model_name(model)
        self.client = HTTPClient(
            base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s
        )
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_logprobs = top_logprobs
        self.system_prompt = system_prompt
        self.write_answer = write_answer
        self.prefill = prefill
        self._normalize = get_normalizer(normalizer)

    # ------------------------------------------------------------------ requests

    def _messages(self, prompt: str, audio: AudioInput, assistant_prefix: str | None = None) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append(
            {"role": "user", "content": [audio_content(audio.require_samples()), {"type": "text", "text": prompt}]}
        )
        if assistant_prefix is not None:
            messages.append({"role": "assistant", "content": assistant_prefix})
        return messages

    def _chat(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        body = {"model": self.model, "messages": messages, **params}
        reply = self.client.post("/chat/completions", json=body)
        if not reply.get("choices"):
            raise ModelOutputError(f"{self.name}: the server's reply has no choices: {str(reply)[:300]}")
        return reply["choices"][0]

    @staticmethod
    def _first_token(choice: dict[str, Any]) -> at.FirstToken:
        content = ((choice.get("logprobs") or {}).get("content")) or []
        if not content:
            raise ModelOutputError(
                "the server returned no logprobs for the first token; it must support logprobs=true and "
                "top_logprobs (vLLM does)"
            )
        first = content[0]
        top = {str(entry.get("token") or ""): float(entry["logprob"]) for entry in first.get("top_logprobs") or []}
        return at.from_top_logprobs((str(first.get("token") or ""), float(first["logprob"])), top)

    # ------------------------------------------------------------------ OmniBackend

    def predict(self, audio: AudioInput, question: str | None = None) -> list[Hypothesis]:
        if self.task == "asr":
            prompt = asr_transcription_prompt()
        elif not question:
            raise ConfigurationError(f"{self.name} answers questions about audio (task='audioqa'); pass question=...")
        else:
            prompt = audioqa_answer_prompt(question)
        choice = self._chat(
            self._messages(prompt, audio), max_tokens=self.max_new_tokens, temperature=0.0, logprobs=True
        )
        text = at.clean_answer((choice.get("message") or {}).get("content") or "")
        tokens = ((choice.get("logprobs") or {}).get("content")) or []
        score = sum(float(t["logprob"]) for t in tokens) / len(tokens) if tokens else None
        return [Hypothesis(text=text, score=score, source=self.name)] if text else []

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        prompt = at.reflection_prompt(inp, self.kind)
        writes = self.write_answer == "always" or (self.write_answer == "samples" and sample)
        seed = at.draw_seed(inp.seed, inp.round, inp.sample_index, inp.audio.id)
        params: dict[str, Any] = {
            "max_tokens": self.max_new_tokens if writes else 1,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            "temperature": self.temperature if sample else 0.0,
        }
        if sample:
            params.update(top_p=self.top_p, seed=seed % (2**31))
        choice = self._chat(self._messages(prompt, inp.audio), **params)
        first = self._first_token(choice)
        generated, answer = at.split_action((choice.get("message") or {}).get("content") or "")
        note = ""
        if not sample:
            action = at.decide(first)
        elif generated is not None:
            action = generated  # the server's own draw
        else:
            action = at.draw_action(first, seed=seed, temperature=self.temperature)
            note = "the sampled first token was not an action token; drew locally from the renormalised probabilities"
        if generated is not action:
            answer = ""  # the text followed another token than the chosen one
        written = (answer or None) if writes else None
        return at.build_reflection(inp, first, action, written, policy=self.name, normalize=self._normalize, note=note)

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        prompt = at.rewrite_prompt(inp, self.kind)
        if self.prefill:
            messages = self._messages(prompt, inp.audio, assistant_prefix=Action.REWRITE.token)
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        else:
            messages, extra = self._messages(prompt, inp.audio), {}
        choice = self._chat(messages, max_tokens=self.max_new_tokens, temperature=0.0, logprobs=True, **extra)
        _, text = at.split_action((choice.get("message") or {}).get("content") or "")
        tokens = ((choice.get("logprobs") or {}).get("content")) or []
        score = sum(float(t["logprob"]) for t in tokens) / len(tokens) if tokens else None
        if not text:
            current = inp.internal.top.text if inp.internal is not None and inp.internal.top is not None else ""
            return Hypothesis(text=current, score=None, source=f"rewrite:{self.name}:empty-output-kept-current")
        return Hypothesis(text=text, score=score, source=f"rewrite:{self.name}")


class OpenAIServerASR:
    """An ASR tool over ``POST /v1/audio/transcriptions`` (1-best: the API returns one transcript)."""

    remote = True

    requires = (HTTPX,)

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://localhost:8000/v1",
        name: str | None = None,
        api_key: str | None = None,
        language: str | None = "en",
        response_format: str = "verbose_json",
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self.model = model
        self.name = name or model_name(model)
        self.language = language
        self.response_format = response_format
        self.client = HTTPClient(
            base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s
        )

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        """The server's transcript. It takes no text prompt: a conversation's earlier turns do not reach it
        (the graph notes that)."""
        samples = audio.require_samples()
        if samples.size == 0:
            return []
        data = {"model": self.model, "response_format": self.response_format, "temperature": "0"}
        if self.language:
            data["language"] = self.language
        files = {"file": (f"{audio.id}.wav", wav_bytes(samples), "audio/wav")}
        reply = self.client.post("/audio/transcriptions", files=files, data=data)
        text = str(reply.get("text", "")).strip()
        segments = [s for s in reply.get("segments") or [] if "avg_logprob" in s]
        score = sum(float(s["avg_logprob"]) for s in segments) / len(segments) if segments else None
        return [Hypothesis(text=text, score=score, source=self.name)] if text else []
