"""The shared backend infrastructure without any model: one lazy shared load, default names, extras."""

from __future__ import annotations

import threading
import time

import pytest

from speech_hands.backends import loading
from speech_hands.backends.loading import (
    LazyModel,
    Loaded,
    ModelRequest,
    OptionalExtra,
    forget_models,
    model_name,
)
from speech_hands.backends.weights import BUNDLED_PREFIX
from speech_hands.errors import ConfigurationError


@pytest.mark.parametrize(
    ("spec", "options", "name"),
    [
        ("bundled:base", {"prepend": "whisper-", "drop_prefix": BUNDLED_PREFIX}, "whisper-base"),
        ("bundled:tiny.en", {"prepend": "whisper-", "drop_prefix": BUNDLED_PREFIX}, "whisper-tiny.en"),
        ("/models/ct2/small.en/", {"prepend": "whisper-", "drop_prefix": BUNDLED_PREFIX}, "whisper-small.en"),
        ("large-v2", {"prepend": "whisper-", "drop_suffix": ".pt"}, "whisper-large-v2"),
        ("/ckpt/tiny-random.pt", {"prepend": "whisper-", "drop_suffix": ".pt"}, "whisper-tiny-random"),
        ("nvidia/parakeet-tdt-0.6b-v3", {"drop_suffix": ".nemo"}, "parakeet-tdt-0.6b-v3"),
        ("/m/parakeet-tdt-tiny-random.nemo", {"drop_suffix": ".nemo"}, "parakeet-tdt-tiny-random"),
        ("Qwen/Qwen2.5-Omni-7B/", {}, "Qwen2.5-Omni-7B"),
    ],
)
def test_model_name_is_the_last_component_without_markers(spec, options, name):
    assert model_name(spec, **options) == name


def test_lazy_model_loads_once_across_threads_and_shares_by_key(monkeypatch):
    monkeypatch.setattr(loading, "_cache", {})  # forget_models() below must not drop other tests' models
    calls: list[str] = []

    def request(key: str) -> ModelRequest:
        def load() -> Loaded:
            time.sleep(0.05)  # long enough for the other threads to arrive while loading
            calls.append(key)
            return Loaded(model=object())

        return ModelRequest(("test-lazy-model", key), load)

    first = LazyModel(lambda: request("a"))
    twin = LazyModel(lambda: request("a"))
    other = LazyModel(lambda: request("b"))
    got: list[Loaded] = []
    threads = [threading.Thread(target=lambda m=m: got.append(m.get())) for m in (first, twin, first, twin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["a"] and all(g is got[0] for g in got)
    assert other.get() is not got[0] and calls == ["a", "b"]

    assert forget_models() == 2
    assert first.get() is got[0]  # a backend keeps its copy
    assert LazyModel(lambda: request("a")).get() is not got[0]  # a new one loads afresh
    assert calls == ["a", "b", "a"]


def test_optional_extra_names_the_install_fix():
    absent = OptionalExtra(module="no_such_pkg_xyz", package="no-such-pkg", extra="demo", what="the demo backend")
    with pytest.raises(
        ConfigurationError, match=r"the demo backend needs the 'no-such-pkg' package.*speech-hands\[demo\]"
    ):
        absent.check()
    with pytest.raises(ConfigurationError, match=r"install the extra: pip install 'speech-hands\[demo\]'"):
        absent.import_module()
    present = OptionalExtra(module="json", package="json", extra="none", what="json")
    present.check()
    assert present.import_module("json.decoder").__name__ == "json.decoder"
