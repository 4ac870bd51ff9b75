"""SpeechHands.from_config: parsing TOML / YAML / JSON, the backend registry, and errors naming the fix."""

from __future__ import annotations

import json

import pytest
from helpers import REPO, dev_flac

from speech_hands import SpeechHands
from speech_hands import assembly as factory
from speech_hands.assembly import read_config
from speech_hands.backends.loading import OptionalExtra
from speech_hands.backends.nemo import NemoASR
from speech_hands.errors import ConfigurationError

EMBEDDED = {"kind": "embedded", "predictor": {"kind": "faster-whisper", "model": "bundled:tiny.en", "cpu_threads": 2}}


@pytest.mark.parametrize("name", ["paper-asr.toml", "paper-audioqa.toml", "vllm-server.toml"])
def test_example_configs_parse(name):
    config, base = read_config(REPO / "examples" / name)
    assert base == (REPO / "examples").resolve()
    assert config.omni.kind in factory.REGISTRY and config.external
    assert all(spec.kind in factory.REGISTRY for spec in config.external)


def test_toml_yaml_json_and_dict_give_the_same_config(tmp_path):
    data = {"agent": {"n_best": 3}, "omni": EMBEDDED, "external": [{"kind": "whisper", "model": "./w.pt"}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    (tmp_path / "c.yaml").write_text(
        "agent: {n_best: 3}\nomni:\n  kind: embedded\n  predictor: {kind: faster-whisper, model: 'bundled:tiny.en', cpu_threads: 2}\n"
        "external:\n  - {kind: whisper, model: ./w.pt}\n"
    )
    (tmp_path / "c.toml").write_text(
        '[agent]\nn_best = 3\n[omni]\nkind = "embedded"\n[omni.predictor]\nkind = "faster-whisper"\nmodel = "bundled:tiny.en"\n'
        'cpu_threads = 2\n[[external]]\nkind = "whisper"\nmodel = "./w.pt"\n'
    )
    parsed = [read_config(tmp_path / f"c.{ext}")[0] for ext in ("json", "yaml", "toml")] + [read_config(data)[0]]
    assert all(p.model_dump() == parsed[0].model_dump() for p in parsed)
    assert parsed[0].external[0].kind == "openai-whisper"  # alias resolved
    resolved = factory._resolve_paths(parsed[0].external[0].options, tmp_path)
    assert resolved["model"] == str(tmp_path / "w.pt")


def test_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ConfigurationError, match=r"known kinds: .*nemo"):
        SpeechHands.from_config({"omni": {"kind": "gpt-9"}})
    with pytest.raises(ConfigurationError, match="not found"):
        SpeechHands.from_config(tmp_path / "absent.toml")
    (tmp_path / "bad.ini").write_text("x")
    with pytest.raises(ConfigurationError, match=r"\.toml"):
        SpeechHands.from_config(tmp_path / "bad.ini")
    with pytest.raises(ConfigurationError, match="its options are: model, name"):
        SpeechHands.from_config(
            {"omni": EMBEDDED, "external": [{"kind": "faster-whisper", "modle": "x"}], "preload": False}
        )
    with pytest.raises(ConfigurationError, match="cannot serve as omni"):
        SpeechHands.from_config({"omni": {"kind": "nemo"}})
    # the backend's own declaration of its extra is what assembly checks, before constructing and
    # without loading anything (preload off): here a package that is surely absent, in any venv
    absent = OptionalExtra(module="no_such_pkg_xyz", package="no-such-pkg", extra="nemo", what="the NeMo ASR backend")
    monkeypatch.setattr(NemoASR, "requires", (absent,))
    with pytest.raises(ConfigurationError, match=r"pip install 'speech-hands\[nemo\]'"):
        SpeechHands.from_config({"omni": EMBEDDED, "external": [{"kind": "nemo"}], "preload": False})


def test_embedded_agent_from_config_runs_on_real_speech(tmp_path):
    from tiny_models import build_tiny_whisper

    build_tiny_whisper(tmp_path / "w.pt")  # the config below points at it
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nn_best = 3\ntrace_db = "{tmp_path / "t.sqlite"}"\n'
        '[omni]\nkind = "embedded"\n[omni.predictor]\nkind = "faster-whisper"\nmodel = "bundled:tiny.en"\ncpu_threads = 2\n'
        '[[external]]\nkind = "openai-whisper"\nmodel = "./w.pt"\nname = "tiny-random"\ndevice = "cpu"\nmax_tokens = 6\n'
    )
    with SpeechHands.from_config(config) as agent:
        result = agent.invoke(dev_flac("1688-142285-0007"))
    assert {c.tool for c in result.candidates} == {"whisper-tiny.en", "tiny-random"}
    assert agent.config.n_best == 3 and result.action is not None


def test_embedded_agent_with_the_learned_reflector_from_config(tmp_path):
    """``reflector = "shipped"`` (or an artifact path) gives the config path SpeechHands.default()'s policy."""
    from speech_hands.cli import DEMO_SAMPLE
    from speech_hands.reflection.learned.policy import DEFAULT_ARTIFACT, SHIPPED_DIR

    (tmp_path / "mine.json").write_text((SHIPPED_DIR / DEFAULT_ARTIFACT).read_text())  # a "trained" artifact
    whisper = (
        '[omni.predictor]\nkind = "faster-whisper"\nmodel = "bundled:base"\ncpu_threads = 2\n'
        '[[external]]\nkind = "faster-whisper"\nmodel = "bundled:tiny.en"\ncpu_threads = 2\n'
    )
    for reflector in ("shipped", "./mine.json"):  # a relative path is taken relative to the config file
        config = tmp_path / "agent.toml"
        config.write_text(
            f'[agent]\ntrace_db = ":memory:"\n[omni]\nkind = "embedded"\nreflector = "{reflector}"\n' + whisper
        )
        with SpeechHands.from_config(config) as agent:
            result = agent.invoke(DEMO_SAMPLE)
        assert result.reflection is not None and result.reflection.policy == "learned-reflector"
        assert "expected errors per word" in (result.reflection.rationale or "")

    both = {"kind": "embedded", "reflector": "shipped", "policy": {}, "predictor": EMBEDDED["predictor"]}
    with pytest.raises(ConfigurationError, match="either reflector or policy"):
        SpeechHands.from_config({"omni": both, "preload": False})
    # the shipped artifact scores with whisper-base and whisper-tiny.en: a pool without them is refused
    with pytest.raises(ConfigurationError, match="pool lacks"):
        SpeechHands.from_config({"omni": {**EMBEDDED, "reflector": "shipped"}, "preload": False})


def test_auto_cpu_threads_share_the_cores_among_the_models_that_perceive_together():
    """The default's two CTranslate2 models run at the same time: each gets an even share of the
    cores (two default-sized OpenMP teams on 2 cores contend; benchmarks/RESULTS.md, ``cost``)."""
    config = factory.default_config()

    def threads(cfg):
        return cfg.omni.predictor.options["cpu_threads"], [e.options["cpu_threads"] for e in cfg.external]

    assert threads(factory.share_cpu_threads(config, cores=2)) == (1, [1])
    assert threads(factory.share_cpu_threads(config, cores=16)) == (8, [8])
    assert threads(factory.share_cpu_threads(config, cores=1)) == (1, [1])  # never 0 (CTranslate2's own default)
    three = factory.default_config(external_models=("bundled:tiny.en", "bundled:tiny.en", "bundled:base"))
    assert threads(factory.share_cpu_threads(three, cores=16)) == (4, [4, 4, 4])
    # an explicit count is kept; a GPU model neither takes a share nor counts as sharing the CPU
    assert threads(factory.share_cpu_threads(factory.default_config(cpu_threads=3), cores=16)) == (3, [3])
    mixed = factory.read_config(
        {
            "omni": {
                **EMBEDDED,
                "predictor": {"kind": "faster-whisper", "model": "bundled:base", "cpu_threads": "auto"},
            },
            "external": [
                {"kind": "faster-whisper", "model": "bundled:tiny.en", "device": "cuda", "cpu_threads": "auto"}
            ],
        }
    )[0]
    shared = factory.share_cpu_threads(mixed, cores=16)
    assert shared.omni.predictor.options["cpu_threads"] == 16 and shared.external[0].options["cpu_threads"] == "auto"
    # what the agent builds: FasterWhisperASR with the share of this machine's cores
    from speech_hands.backends.faster_whisper import threads_per_model

    parts = factory.build_parts(config)
    assert parts.omni.predictor.cpu_threads == threads_per_model(2) == parts.external[0].cpu_threads


@pytest.mark.parametrize("bad", [-1, "many", True, 1.5])
def test_bad_cpu_threads_is_refused_with_the_choices(bad):
    with pytest.raises(ConfigurationError, match="cpu_threads must be 'auto' or a whole number"):
        factory.build_parts(factory.default_config(cpu_threads=bad))
