"""Audio Flamingo 3 on a tiny random AF3 (real processor, chunking, generate), and an AudioQA graph with
the Qwen2.5-Omni backend as the omni model and AF3 as the external tool."""

from __future__ import annotations

from typing import ClassVar

import pytest
from tiny_models import build_audio_flamingo3, build_qwen_omni, require

transformers = require("transformers")

from helpers import dev_flac  # noqa: E402

from speech_hands import AgentConfig, SpeechHands  # noqa: E402
from speech_hands.audio import load_audio  # noqa: E402
from speech_hands.backends.audio_flamingo import AudioFlamingo3  # noqa: E402
from speech_hands.backends.qwen_omni import QwenOmni  # noqa: E402

QUESTION = "What is heard in the recording?\nA. A man reading aloud\nB. A dog barking\nC. Rain on a roof"


@pytest.fixture(scope="module")
def af3_dir(tmp_path_factory, shared_data):
    return build_audio_flamingo3(tmp_path_factory.mktemp("af3"), shared_data)


@pytest.fixture(scope="module")
def audio():
    return load_audio(dev_flac("1688-142285-0007"))


def test_one_best_and_k_samples(af3_dir, audio):
    greedy = AudioFlamingo3(str(af3_dir), device="cpu", max_new_tokens=5)
    one = greedy.caption(audio, QUESTION)
    assert len(one) == 1  # ordering, ranks and scores: test_backend_contract.py
    assert greedy.caption(audio, QUESTION) == one  # greedy is deterministic
    sampler = AudioFlamingo3(str(af3_dir), device="cpu", max_new_tokens=5, num_samples=5, seed=1, name="af3-sampled")
    drawn = sampler.caption(audio)
    assert 1 <= len(drawn) <= 5
    assert sampler.caption(audio) == drawn  # seeded
    other = AudioFlamingo3(str(af3_dir), device="cpu", max_new_tokens=5, num_samples=5, seed=2, name="af3-other")
    assert [h.text for h in other.caption(audio)] != [h.text for h in drawn]


def test_audioqa_graph_with_af3_external(af3_dir, tmp_path, shared_data):
    class Recording(QwenOmni):
        prompts: ClassVar[list[str]] = []

        def _encode(self, loaded, prompts, audios, prefix):
            type(self).prompts += list(prompts)
            return super()._encode(loaded, prompts, audios, prefix)

    omni = Recording(
        str(build_qwen_omni(tmp_path / "omni", shared_data)), task="audioqa", device="cpu", max_new_tokens=4
    )
    af3 = AudioFlamingo3(str(af3_dir), device="cpu", max_new_tokens=4)
    with SpeechHands(omni, [af3], config=AgentConfig(trace_db=str(tmp_path / "t.sqlite"), max_rewrites=0)) as agent:
        result = agent.invoke(dev_flac("1688-142285-0007"), QUESTION)
    assert omni.kind == "answer"
    external = next(c for c in result.candidates if c.tool == "af3")
    assert external.kind == "caption" and external.ok
    reflection_prompt = next(p for p in Recording.prompts if "External prediction" in p)
    for line in QUESTION.splitlines()[1:]:
        assert f"- {line}" in reflection_prompt
    assert f"External prediction: {external.top.text}" in reflection_prompt
    assert result.reflection.policy == omni.name
