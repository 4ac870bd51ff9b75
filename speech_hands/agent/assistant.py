"""The multi-step voice assistant's Python API: :class:`VoiceAssistant`, beside :class:`SpeechHands`.

Each user turn is audio (and, for an audio-QA turn, a question); the agent routes it (the routing
graph as a subgraph, traced per turn), the cues of the audio are measured, and an optional chat model
replies with the whole conversation in view. The conversation lives in the agent's checkpointer (the
same SQLite trace database) under the thread id, so it resumes after a restart::

    from speech_hands import VoiceAssistant

    with VoiceAssistant.default(chat_model=my_chat_model) as assistant:   # any langchain-core BaseChatModel
        first = assistant.turn("hello.flac")                 # a new conversation: first.thread_id
        second = assistant.turn("more.flac", thread_id=first.thread_id)
        print(second.transcript, second.action, second.cues.speaking_rate_wps, second.reply)
        assistant.conversation(first.thread_id)              # every Turn, read back from the checkpointer
        assistant.trace(first.thread_id, turn=2)             # that turn's routing, step by step

Without a chat model it is a multi-turn transcription / audio-QA session (``reply`` is None). The graph
is :mod:`speech_hands.graphs.assistant` (its figure and the message format are there).
"""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from pydantic import Field

from speech_hands.agent.speech_hands import AudioSource, SpeechHands
from speech_hands.errors import ConfigurationError
from speech_hands.graphs.assistant import (
    PROMPT_WORDS,
    AssistantGraph,
    AssistantSettings,
    Turn,
    fresh_turn_input,
)
from speech_hands.tracing.trace import DecisionTrace, read_turn_trace

__all__ = ["ASR_CONTEXT_DEFAULT", "TurnResult", "VoiceAssistant"]

#: Whether earlier turns feed the next turn's ASR prompt by default: what ``benchmarks/asr_prompt.py``
#: measured (docs/assistant.md, "Does the ASR prompt help?").
ASR_CONTEXT_DEFAULT = False


class TurnResult(Turn):
    """A finished :class:`~speech_hands.graphs.assistant.Turn` with the thread it belongs to."""

    thread_id: str = Field(description="the conversation's thread id (continue it with thread_id=...)")


class VoiceAssistant:
    """A multi-turn voice assistant over a :class:`SpeechHands` agent and an optional chat model.

    ``chat_model``: any langchain-core ``BaseChatModel`` (None: no replies). ``asr_context``: earlier
    turns' transcripts (their last ``prompt_words`` words) go to the speech recognisers as their prompt
    (default :data:`ASR_CONTEXT_DEFAULT`, as measured). ``system_prompt`` replaces the shipped system
    message (``prompts/assistant_system.txt``)."""

    def __init__(
        self,
        agent: SpeechHands,
        chat_model: Any = None,
        *,
        asr_context: bool = ASR_CONTEXT_DEFAULT,
        prompt_words: int = PROMPT_WORDS,
        system_prompt: str | None = None,
        owns_agent: bool = False,
    ) -> None:
        if chat_model is not None and not hasattr(chat_model, "invoke"):
            raise ConfigurationError(
                f"chat_model must be a langchain-core chat model (with invoke), not {type(chat_model).__name__}"
            )
        self.agent = agent
        self.chat_model = chat_model
        self._owns_agent = owns_agent
        self.settings = AssistantSettings(
            asr_context=asr_context,
            prompt_words=prompt_words,
            system_prompt=system_prompt,
            inner_concurrency=max(len(agent.tools), agent.config.k_samples, 4),
        )
        builder = AssistantGraph(agent.graph, agent.segmented_graph, agent.store, chat_model, self.settings)
        self.graph: CompiledStateGraph = builder.build().compile(checkpointer=agent.checkpointer)

    @classmethod
    def default(
        cls,
        chat_model: Any = None,
        *,
        asr_context: bool = ASR_CONTEXT_DEFAULT,
        prompt_words: int = PROMPT_WORDS,
        system_prompt: str | None = None,
        **agent_options: Any,
    ) -> VoiceAssistant:
        """The assistant over :meth:`SpeechHands.default` (``agent_options``: its keywords, e.g. ``trace_db``)."""
        agent = SpeechHands.default(**agent_options)
        return cls(
            agent,
            chat_model,
            asr_context=asr_context,
            prompt_words=prompt_words,
            system_prompt=system_prompt,
            owns_agent=True,
        )

    # ------------------------------------------------------------------ running

    def turn(
        self,
        audio: AudioSource,
        question: str | None = None,
        *,
        thread_id: str | None = None,
        utterance_id: str | None = None,
        config: RunnableConfig | None = None,
    ) -> TurnResult:
        """One user turn on ``thread_id`` (None: a new conversation); raises
        :class:`~speech_hands.errors.AudioError` for audio that cannot be read, and
        :class:`~speech_hands.errors.ConfigurationError` for a question the agent cannot answer."""
        loaded = self.agent._prepare(audio, question, utterance_id)
        run_config = self.agent._run_config(thread_id, config)
        tid = run_config["configurable"]["thread_id"]
        inputs = fresh_turn_input(
            loaded.ref.model_dump(mode="json"), question, segmented=self.agent.segmented(loaded, question)
        )
        values = self.graph.invoke(inputs, run_config)
        return TurnResult(**values["turns"][-1], thread_id=tid)

    @staticmethod
    def new_thread() -> str:
        """A fresh thread id (what :meth:`turn` uses when none is given)."""
        return uuid.uuid4().hex

    # ------------------------------------------------------------------ reading a conversation back

    def _values(self, thread_id: str) -> dict[str, Any]:
        snapshot = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return dict(snapshot.values or {})

    def conversation(self, thread_id: str) -> list[TurnResult]:
        """Every finished turn of ``thread_id``, oldest first (empty: no such conversation)."""
        return [TurnResult(**t, thread_id=thread_id) for t in self._values(thread_id).get("turns") or []]

    def messages(self, thread_id: str) -> list[BaseMessage]:
        """The conversation's messages: one per user turn, then the chat model's reply when there is one."""
        return list(self._values(thread_id).get("messages") or [])

    def trace(self, thread_id: str, turn: int | None = None) -> DecisionTrace:
        """The routing trace of one turn (1-based; None: the latest), read back from its namespace."""
        return read_turn_trace(self.agent.graph, thread_id, turn, segmented=self.agent.segmented_graph)

    def draw(self) -> str:
        """The assistant graph as Mermaid text."""
        return self.graph.get_graph().draw_mermaid()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the agent (and its trace database) when this assistant built it."""
        if self._owns_agent:
            self.agent.close()

    def __enter__(self) -> VoiceAssistant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
