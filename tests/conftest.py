"""Shared fixtures (the shared data, an isolated trace database) for every test folder.

Plain helpers live in ``helpers.py`` (import them from there, not from here: every folder's
``conftest.py`` is imported under the same module name). Tests that need the heavy optional extras
(transformers, NeMo) carry the ``extras`` marker: ``make test`` deselects them (``addopts`` in
pyproject.toml), ``make test-extras`` runs ``pytest -m extras`` in ``.venv-extras``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SHARED_DATA


def pytest_report_header(config: pytest.Config) -> str:
    if "extras" in config.option.markexpr and "not extras" not in config.option.markexpr:
        return "extras run: the paper-model backends on tiny random models (tests marked `extras`)"
    return "core run: tests marked `extras` (transformers / NeMo backends) run in `make test-extras` instead"


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
