"""Backends that need the heavy optional extras (transformers, NeMo): every test in this folder carries
the ``extras`` marker, so the marker is the one list of what `make test-extras` runs.

These modules import transformers / NeMo at module level. Where those are not installed (the core
``.venv``) and the run does not ask for ``-m extras``, the folder is not collected at all; a run that
does ask for them collects it anyway, so a missing package fails loudly instead of skipping.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

#: importable modules of the extras these tests need (pyproject.toml: omni, nemo, llm)
EXTRAS = ("transformers", "nemo", "gguf", "peft")
MISSING = [name for name in EXTRAS if importlib.util.find_spec(name) is None]


def _asks_for_extras(config: pytest.Config) -> bool:
    markexpr = config.option.markexpr
    return "extras" in markexpr and "not extras" not in markexpr


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if MISSING and collection_path.is_relative_to(HERE) and not _asks_for_extras(config):
        return True
    return None


@pytest.hookimpl(tryfirst=True)  # before the -m deselection reads the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.extras)
