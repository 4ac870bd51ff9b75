"""A caller's N-best as one request's extra external tool (``/v1/process`` with ``external_nbest``).

:class:`RequestNBest` is an ASR (or, :class:`RequestAnswers`, an audio-QA) backend that answers with
the hypotheses registered for the input's utterance id, so the agent routes between its own tools and
the caller's list exactly as between any tools: the caller's list is one more candidate, scored by the
same reflector. Each request registers its list under its own unique utterance id and removes it when
it is done.

Usage::

    tool = RequestNBest()
    with tool.given("req-1", ["hello world", "hello word"]):
        agent_with_tool.invoke(audio_with_id_req_1)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

from speech_hands.audio import AudioInput
from speech_hands.errors import ToolFailure
from speech_hands.types import Hypothesis

__all__ = ["TOOL_NAME", "RequestAnswers", "RequestNBest"]

#: The tool name a caller's list has in results and traces.
TOOL_NAME = "request-nbest"


class RequestNBest:
    """The N-best lists callers gave, by utterance id (thread-safe; one per service)."""

    def __init__(self, name: str = TOOL_NAME) -> None:
        self.name = name
        self._lists: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def given(self, utterance_id: str, texts: Sequence[str]) -> Iterator[None]:
        with self._lock:
            self._lists[utterance_id] = list(texts)
        try:
            yield
        finally:
            with self._lock:
                self._lists.pop(utterance_id, None)

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        with self._lock:
            texts = self._lists.get(audio.id)
        if texts is None:
            raise ToolFailure(f"no external_nbest was given for {audio.id!r}")
        return [Hypothesis(text=t, source=self.name, rank=i) for i, t in enumerate(texts[: max(1, n_best)])]


class RequestAnswers(RequestNBest):
    """The same for an audio-QA agent: the caller's answers as a caption tool's."""

    def caption(self, audio: AudioInput, question: str | None = None) -> list[Hypothesis]:
        return self.transcribe(audio)
