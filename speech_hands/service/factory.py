"""``speech-hands serve --agent SPEC``: an agent made by the user's own code instead of a configuration
file: custom backends, a wrapped tool, fault injection for a soak test (``benchmarks/soak_agent.py``).

``SPEC`` is ``package.module:function`` (imported like any module, so it must be on ``sys.path``; the
current directory is) or ``path/to/file.py:function``. The function takes no arguments, or only
``trace_db`` when ``--trace-db`` is given, and returns a :class:`~speech_hands.SpeechHands`::

    speech-hands serve --agent benchmarks/soak_agent.py:soak_agent --port 8000
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speech_hands.errors import ConfigurationError

if TYPE_CHECKING:
    from speech_hands.agent import SpeechHands

__all__ = ["agent_from_factory"]


def _module(target: str) -> Any:
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigurationError(f"--agent: no such file {target}")
        name = f"speech_hands_agent_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise ConfigurationError(f"--agent: cannot import {target!r} ({exc})") from exc


def agent_from_factory(spec: str, *, trace_db: str | None = None) -> SpeechHands:
    """The agent ``spec`` (``module:function`` or ``file.py:function``) makes."""
    from speech_hands.agent import SpeechHands

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ConfigurationError(f"--agent {spec!r}: give MODULE:FUNCTION or FILE.py:FUNCTION")
    factory = getattr(_module(target), attr, None)
    if not callable(factory):
        raise ConfigurationError(f"--agent {spec!r}: {target} has no function {attr!r}")
    agent = factory(trace_db=trace_db) if trace_db is not None else factory()
    if not isinstance(agent, SpeechHands):
        raise ConfigurationError(f"--agent {spec!r}: {attr}() returned {type(agent).__name__}, not a SpeechHands")
    return agent
