"""Shared fixtures (the shared data, an isolated trace database) for every test folder.

Plain helpers live in ``helpers.py`` (import them from there, not from here: every folder's
``conftest.py`` is imported under the same module name). Tests that need the heavy optional extras
(transformers, NeMo) carry the ``extras`` marker: ``make test`` deselects them (``addopts`` in
pyproject.toml), ``make test-extras`` runs ``pytest -m extras`` in ``.venv-extras``.
"""

from __future__ import annotations

import itertools
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


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian's binaries; ``tests/postgres.py``) for the whole session, started on
    first use and always stopped. Missing binaries fail the test that asks for it."""
    from postgres import postgres_server

    with postgres_server() as server:
        yield server


_databases = itertools.count()


@pytest.fixture()
def postgres_url(postgres) -> str:
    """A fresh, empty database on the session's server: its postgresql:// URL (with the password)."""
    return postgres.create_database(f"test_{next(_databases)}")


@pytest.fixture(params=["sqlite", "postgres"])
def checkpointer_location(request, tmp_path: Path) -> str:
    """One suite, every backend: a SQLite file, or a fresh Postgres database (the same tests run on both)."""
    if request.param == "sqlite":
        return str(tmp_path / "traces.sqlite")
    return request.getfixturevalue("postgres_url")
