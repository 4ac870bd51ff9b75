"""Shared fixtures: where the shared data lives, and small helpers to write audio files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
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


#: Backend test modules that need the heavy optional extras (transformers, NeMo). They run in
#: `make test-extras` (own venv, SPEECH_HANDS_EXTRAS=1), which CI runs after `make test`; the core run
#: leaves them out instead of skipping them one by one.
EXTRAS_MODULES = frozenset(
    {
        "test_backend_qwen_omni.py",
        "test_backend_audio_flamingo.py",
        "test_backend_nemo.py",
        "test_backend_openai_server.py",
    }
)


def _extras_run() -> bool:
    return os.environ.get("SPEECH_HANDS_EXTRAS") == "1"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name in EXTRAS_MODULES and not _extras_run():
        return True
    return None


def pytest_report_header(config: pytest.Config) -> str:
    if _extras_run():
        return "extras run: the paper-model backends on tiny random models"
    return f"core run: {len(EXTRAS_MODULES)} backend modules needing extras run in `make test-extras` instead"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Traces of tests never land in the user's ~/.cache; model weights stay shared across tests."""
    monkeypatch.setenv("SPEECH_HANDS_TRACE_DB", str(tmp_path_factory.getbasetemp() / "traces.sqlite"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set SPEECH_HANDS_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dev_references(shared_data: Path) -> dict[str, str]:
    import csv

    with (shared_data / "librispeech_other_dev" / "transcripts.tsv").open(newline="") as fh:
        return {row["utt_id"]: row["text"] for row in csv.DictReader(fh, delimiter="\t")}


def dev_flac(uid: str) -> Path:
    return LIBRISPEECH_DEV / uid.split("-")[0] / f"{uid}.flac"


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = 16_000) -> Path:
    sf.write(str(path), samples, sample_rate)
    return path
