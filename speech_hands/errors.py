"""One exception family for errors a user can act on; each message names the fix."""

from __future__ import annotations


class SpeechHandsError(Exception):
    """Base class: something the user can fix (bad input, bad configuration, missing extra)."""


class AudioError(SpeechHandsError):
    """The audio file is missing, unreadable, not audio, empty, or too long."""


class AudioTooLong(AudioError):
    """The audio lasts longer than the accepted maximum (``max_audio_s``)."""


class ConfigurationError(SpeechHandsError):
    """The agent was assembled with settings or backends that cannot work together."""


class ToolFailure(SpeechHandsError):
    """A tool raised or timed out. The graph records it in the trace and carries on without it."""


class RemoteUnavailable(ToolFailure, ConnectionError):
    """A remote backend could not be reached (connection refused or dropped, no answer in time). The
    graph's ``RetryPolicy`` retries the node that called it; the last attempt records the failure."""


class ModelOutputError(SpeechHandsError):
    """A model produced output that cannot be parsed (e.g. no action token)."""


class CheckpointerUnavailable(SpeechHandsError):
    """The checkpointer cannot be opened: a Postgres database that is unreachable, refuses the login or
    does not exist. The message shows the location without its password."""
