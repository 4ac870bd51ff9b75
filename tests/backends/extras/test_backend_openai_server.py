"""The OpenAI-compatible omni backend against a real loopback HTTP server that serves a tiny random
Qwen2.5-Omni and returns real logprobs (the server side uses transformers directly)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import soundfile as sf
from loopback import serve
from tiny_models import build_qwen_omni, require

transformers = require("transformers")
torch = require("torch")

from doubles import FixedASR  # noqa: E402
from helpers import dev_flac  # noqa: E402
from test_backend_qwen_omni import EXTERNAL, UTT, reflection_input  # noqa: E402

from speech_hands import Action, AgentConfig, SpeechHands  # noqa: E402
from speech_hands.audio import audio_from_array, load_audio  # noqa: E402
from speech_hands.backends.openai_server import OpenAIServerOmni  # noqa: E402
from speech_hands.backends.qwen_omni import QwenOmni  # noqa: E402
from speech_hands.errors import ModelOutputError  # noqa: E402
from speech_hands.reflection import action_tokens as at  # noqa: E402


class TinyOmniServer:
    """/v1/chat/completions over a local QwenOmni's model: first-token top_logprobs, greedy or seeded
    sampling, vLLM's continue_final_message for an assistant prefix."""

    def __init__(self, backend: QwenOmni) -> None:
        self.backend = backend
        self.requests: list[dict] = []

    def __call__(self, handler, body: bytes):
        request = json.loads(body)
        self.requests.append(request)
        user = next(m for m in request["messages"] if m["role"] == "user")
        audio_part = next(p for p in user["content"] if p["type"] == "input_audio")
        prompt = next(p["text"] for p in user["content"] if p["type"] == "text")
        samples, rate = sf.read(io.BytesIO(base64.b64decode(audio_part["input_audio"]["data"])), dtype="float32")
        audio = audio_from_array(samples, rate, utterance_id="upload")
        prefix = request["messages"][-1]["content"] if request.get("continue_final_message") else ""
        loaded = self.backend.load()
        tokenizer = loaded.extras["tokenizer"]
        inputs = self.backend._to_model(loaded, self.backend._encode(loaded, [prompt], [audio], [prefix]))
        sample = request.get("temperature", 1.0) > 0
        with torch.inference_mode():
            if sample:
                torch.manual_seed(request.get("seed", 0))
            out = loaded.model.generate(
                **inputs,
                max_new_tokens=request["max_tokens"],
                do_sample=sample,
                temperature=request.get("temperature") or None,
                output_scores=True,
                return_dict_in_generate=True,
                top_k=None,
                top_p=None,
            )
        new = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
        content = []
        k = request.get("top_logprobs", 0)
        for token_id, scores in zip(new, out.scores):
            logprobs = torch.log_softmax(scores[0].float(), dim=-1)
            top = torch.topk(logprobs, min(k, logprobs.numel())) if k else None
            content.append(
                {
                    "token": tokenizer.convert_ids_to_tokens(token_id) or f"<unused{token_id}>",
                    "logprob": float(logprobs[token_id]),
                    "top_logprobs": [
                        {"token": tokenizer.convert_ids_to_tokens(int(i)) or f"<unused{int(i)}>", "logprob": float(v)}
                        for v, i in zip(*top)
                    ]
                    if top is not None
                    else [],
                }
            )
        text = tokenizer.decode(new, skip_special_tokens=False).replace("<|im_end|>", "")
        return 200, {"choices": [{"message": {"role": "assistant", "content": text}, "logprobs": {"content": content}}]}


@pytest.fixture(scope="module")
def local(tmp_path_factory, shared_data) -> QwenOmni:
    directory = build_qwen_omni(tmp_path_factory.mktemp("served"), shared_data, seed=3)
    return QwenOmni(str(directory), device="cpu", max_new_tokens=5)


@pytest.fixture(scope="module")
def audio():
    return load_audio(dev_flac(UTT))


def test_reflection_probs_equal_the_local_restriction_when_all_tokens_are_listed(local, audio):
    inp = reflection_input(audio)
    with serve(TinyOmniServer(local)) as url:
        remote = OpenAIServerOmni("tiny-omni", base_url=url, top_logprobs=100_000, max_new_tokens=5)
        served = remote.reflect(inp)
    mine = local.reflect(inp)
    assert served.action is mine.action
    assert [served.probs[a] for a in Action] == pytest.approx([mine.probs[a] for a in Action], abs=1e-4)
    assert served.raw_token == mine.raw_token and "not in the server's top_logprobs" not in (served.rationale or "")


def test_action_tokens_missing_from_top_logprobs(local, audio):
    inp = reflection_input(audio)
    first = local.first_token(at.reflection_prompt(inp, "asr"), audio)
    loaded = local.load()
    # rank of the best action token in the full first-token distribution
    prompt_inputs = local._to_model(loaded, local._encode(loaded, [at.reflection_prompt(inp, "asr")], [audio], [""]))
    with torch.inference_mode():
        logprobs = torch.log_softmax(loaded.model(**prompt_inputs).logits[0, -1].float(), -1)
    best = max(Action, key=lambda a: first.logits[list(Action).index(a)])
    rank = int((logprobs > logprobs[local.action_ids[best]]).sum()) + 1
    others = [a for a in Action if a is not best]
    # the tiny model (seed 3) ranks its best action token far down the vocabulary, alone at its rank
    assert rank > 1 and all(int((logprobs > logprobs[local.action_ids[a]]).sum()) + 1 > rank for a in others)
    with serve(TinyOmniServer(local)) as url:
        reflection = OpenAIServerOmni("tiny-omni", base_url=url, top_logprobs=rank).reflect(inp)
    assert reflection.probs[best] == 1.0 and reflection.action is best
    assert "not in the server's top_logprobs" in reflection.rationale
    with serve(TinyOmniServer(local)) as url, pytest.raises(ModelOutputError, match="none of the action tokens"):
        OpenAIServerOmni("tiny-omni", base_url=url, top_logprobs=rank - 1).reflect(inp)


def test_predict_and_rewrite_over_http_match_the_local_model(local, audio):
    server = TinyOmniServer(local)
    inp = reflection_input(audio)
    with serve(server) as url:
        remote = OpenAIServerOmni("tiny-omni", base_url=url, max_new_tokens=5)
        predicted = remote.predict(audio)
        rewritten = remote.rewrite(inp)
    assert predicted[0].text == local.predict(audio)[0].text
    rewrite_request = server.requests[-1]
    assert rewrite_request["continue_final_message"] is True and rewrite_request["add_generation_prompt"] is False
    assert rewrite_request["messages"][-1] == {"role": "assistant", "content": "<rewrite>"}
    prompt = rewrite_request["messages"][0]["content"][1]["text"]
    assert all(candidate in prompt for candidate in EXTERNAL)
    assert rewritten.source.startswith("rewrite:tiny-omni")


def test_sampled_draws_send_seeds_and_temperature(local, audio):
    server = TinyOmniServer(local)
    with serve(server) as url:
        remote = OpenAIServerOmni("tiny-omni", base_url=url, temperature=0.9, max_new_tokens=3, top_logprobs=100_000)
        draws = [
            remote.reflect(reflection_input(audio, sample_index=i, n_samples=3, seed=5), sample=True) for i in range(3)
        ]
        again = remote.reflect(reflection_input(audio, sample_index=1, n_samples=3, seed=5), sample=True)
    seeds = [r["seed"] for r in server.requests[:3]]
    assert len(set(seeds)) == 3 and all(r["temperature"] == 0.9 for r in server.requests)
    assert again.action is draws[1].action and again.answer == draws[1].answer
    assert all(sum(d.probs.values()) == pytest.approx(1.0) for d in draws)


def test_graph_over_the_served_model(local, tmp_path):
    with serve(TinyOmniServer(local)) as url:
        remote = OpenAIServerOmni("tiny-omni", base_url=url, max_new_tokens=4, top_logprobs=100_000, name="served")
        cfg = AgentConfig(trace_db=str(tmp_path / "t.sqlite"), max_rewrites=1)
        with SpeechHands(remote, [FixedASR("parakeet", EXTERNAL)], config=cfg) as agent:
            result = agent.invoke(dev_flac(UTT))
    assert result.reflection.policy == "served" and result.internal.ok
    assert np.isclose(sum(result.reflection.probs.values()), 1.0)
