"""Plain helpers shared by every test folder: where the shared data lives, and writing audio files.

Import them as ``from helpers import ...`` (``pythonpath = ["tests"]`` in pyproject.toml), never from
``conftest``: pytest imports every folder's ``conftest.py`` under the one module name ``conftest``, so
``from conftest import`` reaches whichever conftest was imported last.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def _find_shared_data() -> Path:
    from speech_hands.datasets.builtin import shared_data_dir
    from speech_hands.errors import ConfigurationError

    try:
        return shared_data_dir()
    except ConfigurationError:
        return REPO.parent / "shared" / "data"  # reported by the shared_data fixture


SHARED_DATA = _find_shared_data()
LIBRISPEECH_DEV = SHARED_DATA / "librispeech_other_dev"


def dev_flac(uid: str) -> Path:
    return LIBRISPEECH_DEV / uid.split("-")[0] / f"{uid}.flac"


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = 16_000) -> Path:
    sf.write(str(path), samples, sample_rate)
    return path
