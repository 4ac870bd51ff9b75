"""Command-line options shared by several commands (``transcribe``, ``demo``, ``serve``, ``threads``,
``trace``, ``ui``, ``export-html``): one definition each, so every command spells and explains them alike.

``--checkpointer`` (also spelled ``--trace-db``) names where runs are checkpointed: a SQLite file, a
``postgresql://`` URL or ``':memory:'`` (:mod:`speech_hands.checkpointing`). :func:`open_for_command`
opens it *before* any model loads, so a wrong or unreachable database ends the command at once with
one ``error:`` line (exit status 2) that never shows the URL's password.

    from speech_hands.cli_options import CheckpointerOption, open_for_command

    def command(trace_db: str | None = CheckpointerOption) -> None:
        location, saver = open_for_command(trace_db)
"""

from __future__ import annotations

import typer
from langgraph.checkpoint.base import BaseCheckpointSaver

from speech_hands.checkpointing import open_checkpointer
from speech_hands.config import AgentConfig

__all__ = ["CheckpointerOption", "open_for_command", "resolve"]

CheckpointerOption = typer.Option(
    None,
    "--checkpointer",
    "--trace-db",
    help="where runs are checkpointed (the traces): a SQLite file (default ~/.cache/speech_hands/traces.sqlite, "
    "or $SPEECH_HANDS_TRACE_DB), a postgresql://USER:PASSWORD@HOST:PORT/DB URL (extra 'postgres'; workers can "
    "share it) or ':memory:'",
)


def resolve(value: str | None) -> str:
    """The location ``value`` names (the default when None); an unsupported URL scheme is an error."""
    return AgentConfig(trace_db=value).resolved_trace_db()


def open_for_command(value: str | None) -> tuple[str, BaseCheckpointSaver]:
    """The resolved location and its open saver; raises a
    :class:`~speech_hands.errors.SpeechHandsError` the command line prints as one line."""
    location = resolve(value)
    return location, open_checkpointer(location)
