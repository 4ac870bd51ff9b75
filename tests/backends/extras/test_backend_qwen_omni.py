"""The Qwen2.5-Omni backend on a tiny random Qwen2.5-Omni thinker: real loading from a saved directory,
real processor and chat template, first-token restriction, sampling, rewrite, and the graph around it."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny_models import build_chat_llm, build_qwen_omni, last_hidden, require, steer_first_token

transformers = require("transformers")
torch = require("torch")

from doubles import FixedASR  # noqa: E402
from helpers import dev_flac  # noqa: E402

from speech_hands import Action, AgentConfig, SpeechHands  # noqa: E402
from speech_hands.audio import audio_from_array, load_audio  # noqa: E402
from speech_hands.backends.composed import ComposedOmni  # noqa: E402
from speech_hands.backends.loading import forget_models  # noqa: E402
from speech_hands.backends.qwen_omni import QwenOmni, audio_only_processor_class  # noqa: E402
from speech_hands.errors import ConfigurationError  # noqa: E402
from speech_hands.reflection import action_tokens as at  # noqa: E402
from speech_hands.reflection.base import ReflectionInput  # noqa: E402
from speech_hands.reflection.chat_llm import ChatLLMReflector  # noqa: E402
from speech_hands.types import ACTION_TOKENS, Hypothesis, ToolOutput  # noqa: E402

UTT = "1688-142285-0007"
EXTERNAL = ["the bells were ringing in the tower", "the bell was ringing in the tower", "a bell rang in the tower"]


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory, shared_data) -> Path:
    return build_qwen_omni(tmp_path_factory.mktemp("qwen-omni"), shared_data)


@pytest.fixture(scope="module")
def omni(omni_dir) -> QwenOmni:
    return QwenOmni(str(omni_dir), device="cpu", dtype="float32", max_new_tokens=6)


@pytest.fixture(scope="module")
def audio():
    return load_audio(dev_flac(UTT))


def reflection_input(audio, *, internal="the bell is ringing in the tower", round_=0, **kw) -> ReflectionInput:
    return ReflectionInput(
        audio=audio,
        question=None,
        internal=ToolOutput(tool="qwen", role="internal", hypotheses=[Hypothesis(text=internal, source="qwen")]),
        externals=[
            ToolOutput(
                tool="parakeet",
                role="external",
                hypotheses=[Hypothesis(text=t, source="parakeet", rank=i) for i, t in enumerate(EXTERNAL)],
            )
        ],
        round=round_,
        **kw,
    )


def reference_first_position(model_dir: Path, prompt: str, audio) -> torch.Tensor:
    """The first-token logits computed without the backend: transformers' own classes, the processor,
    and generate(output_scores=True)."""
    model = transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32
    ).eval()
    processor = audio_only_processor_class().from_pretrained(model_dir)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "x"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], audio=[audio.samples], return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    return out.scores[0][0].float()


def test_reflection_probs_are_softmax_over_the_three_action_logits(omni, omni_dir, audio):
    inp = reflection_input(audio)
    reflection = omni.reflect(inp)
    logits = reference_first_position(omni_dir, at.reflection_prompt(inp, "asr"), audio)
    ids = [omni.action_ids[a] for a in Action]
    expected = torch.softmax(logits[ids], dim=0).tolist()
    assert [reflection.probs[a] for a in Action] == pytest.approx(expected, abs=1e-5)
    assert sum(reflection.probs.values()) == pytest.approx(1.0)
    # the decision is the argmax of the restricted distribution; the raw token the unconstrained argmax
    assert reflection.action is list(Action)[int(np.argmax(expected))]
    tokenizer = omni.load().extras["tokenizer"]
    assert reflection.raw_token == tokenizer.convert_ids_to_tokens(int(torch.argmax(logits)))
    mass = float(torch.softmax(logits, dim=0)[ids].sum())
    assert f"{mass:.3f}" in reflection.rationale
    assert reflection.policy == omni.name and reflection.external_tool == "parakeet"


def test_action_tokens_are_single_tokens_in_the_loaded_tokenizer(omni):
    tokenizer = omni.load().extras["tokenizer"]
    for action, token_id in omni.action_ids.items():
        assert tokenizer.encode(action.token, add_special_tokens=False) == [token_id]
    assert omni.info()["device"] == "cpu" and omni.info()["dtype"] == "float32"


def test_model_without_action_tokens_is_a_configuration_error_naming_the_fix(tmp_path, shared_data, audio):
    plain = build_qwen_omni(tmp_path / "plain", shared_data, action_tokens=False)
    with pytest.raises(ConfigurationError, match="add_action_tokens=True"):
        QwenOmni(str(plain), device="cpu").load()
    # from_config loads while assembling, so the same error surfaces there, before any input runs
    with pytest.raises(ConfigurationError, match="not a model fine-tuned"):
        SpeechHands.from_config({"omni": {"kind": "qwen-omni", "model": str(plain), "device": "cpu"}})
    added = QwenOmni(str(plain), device="cpu", add_action_tokens=True, max_new_tokens=2)
    ids = added.action_ids
    assert len(set(ids.values())) == 3
    reflection = added.reflect(reflection_input(audio))
    assert sum(reflection.probs.values()) == pytest.approx(1.0)


def test_full_omni_checkpoint_loads_the_thinker(tmp_path, shared_data, omni, audio):
    """A full Qwen2.5-Omni directory (thinker weights under ``thinker.``) and a thinker-only one built
    from the same seed give the same decision."""
    full = build_qwen_omni(tmp_path / "full", shared_data, layout="full")
    assert '"model_type": "qwen2_5_omni"' in (full / "config.json").read_text()
    backend = QwenOmni(str(full), device="cpu", max_new_tokens=2)
    inp = reflection_input(audio)
    assert backend.reflect(inp).probs == pytest.approx(omni.reflect(inp).probs, abs=1e-5)


def test_wrong_checkpoint_kind_and_missing_directory(tmp_path, shared_data):
    chat = build_chat_llm(tmp_path / "chat", shared_data)
    with pytest.raises(ConfigurationError, match="chat-llm"):
        QwenOmni(str(chat), device="cpu").load()
    with pytest.raises(ConfigurationError, match=r"config.json"):
        QwenOmni(str(tmp_path), device="cpu").load()
    with pytest.raises(ConfigurationError, match="GPU"):
        QwenOmni(str(chat), device="cuda").load() if not torch.cuda.is_available() else (_ for _ in ()).throw(
            ConfigurationError("GPU present: nothing to check")
        )


def test_predict_batch_and_long_audio(omni, audio):
    rng = np.random.default_rng(0)
    noise = audio_from_array((0.05 * rng.standard_normal(16_000 * 3)).astype(np.float32), 16_000, utterance_id="noise")
    single = omni.predict(audio)
    batch = omni.predict_batch([audio, noise])
    assert len(batch) == 2  # padding does not change a greedy first pass (up to float rounding)
    assert batch[0][0].text == single[0].text and batch[0][0].score == pytest.approx(single[0].score, abs=1e-5)
    assert single and single[0].score is not None and single[0].score <= 0
    long = audio_from_array(np.concatenate([audio.samples] * 5), 16_000, utterance_id="long")
    assert long.ref.duration_s > 30
    loaded = omni.load()
    encoded = omni._encode(loaded, ["x"], [long], [""])
    assert encoded["input_features"].shape[0] == 2  # two 30 s feature windows, one audio item each
    bos = loaded.extras["tokenizer"].convert_tokens_to_ids("<|audio_bos|>")
    assert int((encoded["input_ids"] == bos).sum()) == 2
    assert omni.predict(long)


def test_rewrite_continues_after_the_rewrite_token_with_every_candidate(omni_dir, audio):
    class Recording(QwenOmni):
        def _encode(self, loaded, prompts, audios, prefix):
            self.seen = (list(prompts), list(prefix))
            return super()._encode(loaded, prompts, audios, prefix)

    backend = Recording(str(omni_dir), device="cpu", max_new_tokens=5)
    inp = reflection_input(
        audio,
        internal="rewrite one",
        round_=1,
        previous_rewrites=[Hypothesis(text="rewrite one", source="rewrite:x")],
        original_internal=ToolOutput(
            tool="qwen", role="internal", hypotheses=[Hypothesis(text="the first pass", source="qwen")]
        ),
    )
    out = backend.rewrite(inp)
    prompts, prefix = backend.seen
    assert prefix == [Action.REWRITE.token]
    for candidate in [*EXTERNAL, "the first pass", "rewrite one"]:
        assert candidate in prompts[0]
    assert out.source.startswith("rewrite:")
    assert all(token not in out.text for token in ACTION_TOKENS)


def test_k_sample_draws_are_batched_reproducible_and_seeded(omni, audio):
    inp = reflection_input(audio, seed=7, n_samples=4)
    draws = omni.sample_reflections(inp, 4)
    again = omni.sample_reflections(inp, 4)
    assert [d.sample_index for d in draws] == [0, 1, 2, 3]
    assert [(d.action, d.answer) for d in draws] == [(d.action, d.answer) for d in again]
    assert all(d.answer is not None for d in draws)  # write_answer="samples": the text after the token
    assert all(d.probs == draws[0].probs for d in draws)  # one forward pass for all draws
    other = omni.sample_reflections(replace(inp, seed=8), 4)
    assert [(d.action, d.answer) for d in other] != [(d.action, d.answer) for d in draws]
    # the graph path: per-draw calls read the same batch
    assert omni.reflect(replace(inp, sample_index=2), sample=True) == draws[2]


def test_sampled_actions_follow_the_tempered_distribution():
    first = at.FirstToken(logits=(math.log(0.6), math.log(0.3), math.log(0.1)), raw_token="<internal>")
    draws = [at.draw_action(first, seed=at.draw_seed(0, 0, i)) for i in range(3000)]
    share = {a: draws.count(a) / len(draws) for a in Action}
    assert share[Action.INTERNAL] == pytest.approx(0.6, abs=0.04)
    assert share[Action.REWRITE] == pytest.approx(0.1, abs=0.03)
    cold = [at.draw_action(first, seed=at.draw_seed(0, 0, i), temperature=0.05) for i in range(200)]
    assert cold.count(Action.INTERNAL) == 200


def test_graph_runs_on_the_omni_model_with_real_speech(omni, audio, tmp_path):
    external = FixedASR("parakeet", EXTERNAL)
    with SpeechHands(
        omni, [external], config=AgentConfig(trace_db=str(tmp_path / "t.sqlite"), max_rewrites=1)
    ) as agent:
        result = agent.invoke(dev_flac(UTT))
    assert result.internal is not None and result.internal.tool == omni.name and result.internal.ok
    assert result.reflection is not None and result.reflection.policy == omni.name
    assert sum(result.reflection.probs.values()) == pytest.approx(1.0)
    route = [t.node for t in result.timings]
    expected_node = {Action.INTERNAL: "use_internal", Action.EXTERNAL: "use_external", Action.REWRITE: "rewrite"}
    assert expected_node[result.reflection.action] in route


def test_majority_sampling_in_the_graph_uses_one_batch_per_round(omni_dir, tmp_path):
    class Counting(QwenOmni):
        batches = 0

        def _draw_batch(self, inp, prompt, k):
            type(self).batches += 1
            return super()._draw_batch(inp, prompt, k)

    backend = Counting(str(omni_dir), device="cpu", max_new_tokens=3)
    cfg = AgentConfig(trace_db=str(tmp_path / "t.sqlite"), k_samples=3, max_rewrites=0)
    with SpeechHands(backend, [FixedASR("parakeet", EXTERNAL)], config=cfg) as agent:
        result = agent.invoke(dev_flac(UTT))
    assert len(result.samples) == 3 and sorted(s.sample_index for s in result.samples) == [0, 1, 2]
    assert Counting.batches == 1


@pytest.mark.parametrize("target", [Action.EXTERNAL, Action.REWRITE])
def test_a_model_that_emits_the_token_takes_that_edge(tmp_path, shared_data, audio, target):
    """Stand-in for a fine-tuned model: the output row of one action token is edited to win the first
    position; the graph must then take exactly that edge."""
    directory = build_qwen_omni(tmp_path / "steered", shared_data, seed=1)
    probe = QwenOmni(str(directory), device="cpu", max_new_tokens=4)
    loaded = probe.load()
    hidden = []
    for inp in (reflection_input(audio), reflection_input(audio, internal="another answer", round_=1)):
        inputs = probe._to_model(loaded, probe._encode(loaded, [at.reflection_prompt(inp, "asr")], [audio], [""]))
        hidden.append(last_hidden(loaded.model, inputs))
    steer_first_token(directory, target.token, torch.cat(hidden))
    forget_models()  # the probe's copy of the old weights is cached process-wide
    steered = QwenOmni(str(directory), device="cpu", max_new_tokens=4, name="steered")
    cfg = AgentConfig(trace_db=str(tmp_path / "t.sqlite"), max_rewrites=1)
    with SpeechHands(steered, [FixedASR("parakeet", EXTERNAL)], config=cfg) as agent:
        result = agent.invoke(dev_flac(UTT))
    assert result.reflection.action is target
    assert result.reflection.probs[target] > 0.99
    assert result.reflection.raw_token == target.token
    if target is Action.EXTERNAL:
        assert result.answer == EXTERNAL[0] and result.action is Action.EXTERNAL
    else:
        assert result.rewrite_count == 1 and "rewrite" in [t.node for t in result.timings]
        record = result.rewrites[0]
        if record.strategy.endswith("empty-output-kept-current"):
            # the steered model writes only more <rewrite> tokens after its token: the documented
            # fallback keeps the current answer and says so in the trace
            # (its own first pass is only action tokens too, so no internal hypothesis either)
            assert record.text == (result.internal.top.text if result.internal.top else "")
        else:
            assert record.strategy == "rewrite:steered"
    shutil.rmtree(directory)


def test_chat_llm_reflector_composes_with_a_predictor(tmp_path, shared_data, audio):
    chat = build_chat_llm(tmp_path / "chat", shared_data)
    llm = ChatLLMReflector(str(chat), device="cpu", max_new_tokens=4, write_answer="always")
    inp = reflection_input(audio)
    reflection = llm.reflect(inp)
    model = transformers.AutoModelForCausalLM.from_pretrained(chat).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": at.reflection_prompt(inp, "asr")}], add_generation_prompt=True, tokenize=False
    )
    with torch.inference_mode():
        logits = model(**tokenizer(text, return_tensors="pt")).logits[0, -1]
    ids = [llm.action_ids[a] for a in Action]
    assert [reflection.probs[a] for a in Action] == pytest.approx(torch.softmax(logits[ids], 0).tolist(), abs=1e-5)
    assert reflection.answer is not None
    omni = ComposedOmni(FixedASR("internal-asr", ["the bell is ringing"]), llm, llm, name="composed")
    with SpeechHands(omni, [FixedASR("parakeet", EXTERNAL)], config=AgentConfig(trace_db=":memory:")) as agent:
        result = agent.invoke(dev_flac(UTT))
    assert result.reflection.policy == llm.name
