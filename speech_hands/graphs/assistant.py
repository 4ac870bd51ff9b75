"""The multi-step voice assistant: a conversation graph over the routing graph (the figure)::

    START --> listen      (this turn's ASR prompt: the most recent words of the earlier turns' transcripts)
                 |
                 v
              route       (the routing graph of speech_hands.graphs.routing, or the segmenting graph for
                 |         speech over 30 s, run as a subgraph: checkpointed in the thread under this
                 |         turn's namespace, so the turn's routing trace is read back like any run's;
                 |         then the cues measured from the audio, speech_hands.cues)
                 v
              respond     (the turn as a user message; the chat model's reply when there is one)
                 |
                 v
                END

One thread is one conversation: ``messages`` (LangGraph's ``add_messages`` reducer) and ``turns``
(appended, never reset) live in the checkpointer under the thread id, so a new process that opens the
same trace database continues the conversation with every earlier turn intact. Each run of the graph
is one user turn; its input is the turn's audio reference (and question, for an audio-QA turn).

A user turn's message is plain text (:func:`turn_message`): the words first, as a person would have
typed them, then one line in parentheses of what was measured::

    i really liked that account of himself

    (turn 2; heard by speech recognition, <external>, P=0.81; cues: speaking rate 2.9 words/s over ...)

An audio-QA turn starts with the question and its line holds the answer found in the audio. The words
come first because the bundled Qwen 0.5B echoed the user's words back, turn after turn, when they came
after a ``[turn N] heard (...):`` prefix, and answered them when they came first (docs/assistant.md).
The chat model (any langchain-core ``BaseChatModel``) receives the system message
(``prompts/assistant_system.txt``), every earlier message (its own replies included) and this turn's.
Without a chat model the graph is a multi-turn transcription / audio-QA session (``reply`` is None). A
chat model that raises costs the reply, never the turn: the error goes into the turn's ``notes``.

The ASR prompt (:func:`asr_prompt`): the transcripts of the earlier speech turns (not questions, not
replies: text the recogniser can expect to continue), joined, keeping the last ``prompt_words`` words
(:data:`PROMPT_WORDS`: Whisper takes about 224 prompt tokens, some 1.3 tokens a word). Whether it is on
by default is decided by ``benchmarks/asr_prompt.py`` (docs/assistant.md, "Does the ASR prompt help?").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (JSON schemas)

from speech_hands.audio import AudioStore
from speech_hands.cues import Cues, measure_cues
from speech_hands.graphs.routing import _timed
from speech_hands.graphs.segments import fresh_segmented_input, segmented_result_from_state
from speech_hands.graphs.state import extend, fresh_input, result_from_state
from speech_hands.prompts import assistant_system_prompt
from speech_hands.types import Action, AgentResult, AudioRef

log = logging.getLogger(__name__)

__all__ = [
    "PROMPT_WORDS",
    "AssistantGraph",
    "AssistantSettings",
    "AssistantState",
    "Turn",
    "asr_prompt",
    "assistant_shape",
    "fresh_turn_input",
    "turn_message",
]

#: The ASR prompt keeps at most this many of the most recent words (Whisper's prompt: ~224 tokens).
PROMPT_WORDS = 150


class Turn(BaseModel):
    """One user turn of a conversation, as the thread keeps it."""

    index: int = Field(description="1 for the conversation's first turn")
    audio: AudioRef
    question: str | None = Field(default=None, description="the question of an audio-QA turn")
    transcript: str = Field(description="the routed answer: what was said, or the answer to the question")
    action: Action | None = Field(default=None, description="the routing decision (None: the turn was skipped)")
    probabilities: dict[str, float] | None = Field(default=None, description="P(action) of the first decision")
    skipped_reason: str | None = None
    cues: Cues | None = Field(default=None, description="measured from the audio (None: no samples)")
    asr_prompt: str | None = Field(default=None, description="the earlier text the speech recognisers were given")
    reply: str | None = Field(default=None, description="the chat model's reply (None: no chat model)")
    notes: list[str] = Field(default_factory=list, description="what failed or fell back, routing included")
    checkpoint_ns: str | None = Field(default=None, description="where the turn's routing run is checkpointed")
    segmented: bool = Field(default=False, description="long speech routed segment by segment")


def _append(left: list[Any] | None, right: list[Any] | None) -> list[Any]:
    """Append ``right`` to ``left`` (a conversation's turns are never reset)."""
    return [*(left or []), *(right or [])]


class AssistantState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]  # the conversation, the chat model's replies included
    turns: Annotated[list[dict[str, Any]], _append]  # Turn, one per finished user turn
    # this turn's input
    audio: dict[str, Any]  # AudioRef
    question: str | None
    segmented: bool  # route the turn segment by segment (speech over 30 s)
    # this turn's work
    asr_prompt: str | None
    routed: dict[str, Any] | None  # Turn without a reply yet (route -> respond)
    timings: Annotated[list[dict[str, Any]], extend]  # NodeTiming of this turn's nodes


def fresh_turn_input(audio: dict[str, Any], question: str | None = None, *, segmented: bool = False) -> AssistantState:
    """The input of one user turn: its audio and question; this turn's work reset, the conversation kept."""
    return AssistantState(
        audio=audio, question=question, segmented=segmented, asr_prompt=None, routed=None, timings=None
    )  # type: ignore[typeddict-item]


def asr_prompt(turns: Sequence[Turn | dict[str, Any]], max_words: int = PROMPT_WORDS) -> str | None:
    """The earlier speech turns' transcripts, joined, keeping the most recent ``max_words`` words (None: none)."""
    texts = []
    for turn in turns:
        t = turn if isinstance(turn, Turn) else Turn.model_validate(turn)
        if t.question is None and t.action is not None and t.transcript.strip():
            texts.append(t.transcript.strip())
    words = " ".join(texts).split()
    if not words or max_words <= 0:
        return None
    return " ".join(words[-max_words:])


def _probability(turn: Turn) -> str:
    if turn.action is None or not turn.probabilities:
        return turn.action.token if turn.action is not None else ""
    return f"{turn.action.token}, P={turn.probabilities.get(turn.action.value, 0.0):.2f}"


def turn_message(turn: Turn) -> str:
    """The text of a user turn's message (module docstring: the format)."""
    cues = f"; cues: {turn.cues.as_text()}" if turn.cues is not None else ""
    if turn.action is None:
        return f"(turn {turn.index}; nothing was heard: {turn.skipped_reason or 'skipped'}{cues})"
    if turn.question is not None:
        about = f"a question about the audio; the answer found in the audio ({_probability(turn)}): {turn.transcript}"
        return f"{turn.question}\n\n(turn {turn.index}; {about}{cues})"
    return f"{turn.transcript}\n\n(turn {turn.index}; heard by speech recognition, {_probability(turn)}{cues})"


@dataclass(frozen=True)
class AssistantSettings:
    """Knobs of the assistant graph (:class:`speech_hands.agent.assistant.VoiceAssistant` documents them)."""

    asr_context: bool = False
    prompt_words: int = PROMPT_WORDS
    system_prompt: str | None = None  # None: prompts/assistant_system.txt
    inner_concurrency: int = 4


#: Every node with the input it receives, and the edges (one straight line).
NODES: tuple[str, ...] = ("listen", "route", "respond")
EDGES: tuple[tuple[str, str], ...] = ((START, "listen"), ("listen", "route"), ("route", "respond"), ("respond", END))


def _assemble(nodes: dict[str, Callable[..., Any]]) -> StateGraph:
    graph = StateGraph(AssistantState)
    for name in NODES:
        graph.add_node(name, _timed(name, nodes[name]))
    for source, target in EDGES:
        graph.add_edge(source, target)
    return graph


def assistant_shape() -> StateGraph:
    """The assistant graph's nodes and edges with no models: to draw it or read a thread back. Running it raises."""

    def unbacked(name: str) -> Callable[..., Any]:
        def run(*_: Any, **__: Any) -> Any:
            raise RuntimeError(f"{name!r} has no backend in assistant_shape(); build an AssistantGraph to run it")

        return run

    return _assemble({name: unbacked(name) for name in NODES})


class AssistantGraph:
    """Builds the assistant graph over the compiled routing and segmenting graphs and an optional chat model."""

    def __init__(
        self,
        routing: CompiledStateGraph,
        segmented: CompiledStateGraph | None,
        store: AudioStore,
        chat_model: Any = None,
        settings: AssistantSettings | None = None,
    ) -> None:
        self.routing = routing
        self.segmented = segmented
        self.store = store
        self.chat_model = chat_model
        self.settings = settings or AssistantSettings()

    # ----------------------------------------------------------------- nodes

    def listen(self, state: AssistantState) -> dict[str, Any]:
        prompt = asr_prompt(state.get("turns") or [], self.settings.prompt_words) if self.settings.asr_context else None
        return {"asr_prompt": prompt}

    def route(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        namespace = (config.get("configurable") or {}).get("checkpoint_ns")
        audio, question, prompt = state["audio"], state.get("question"), state.get("asr_prompt")
        long = bool(state.get("segmented")) and question is None and self.segmented is not None
        run = {"max_concurrency": self.settings.inner_concurrency}
        notes: list[str] = []
        try:
            if long:
                values = self.segmented.invoke(fresh_segmented_input(audio, prompt), run)  # type: ignore[union-attr]
                result: AgentResult | None = segmented_result_from_state(values, thread_id="", checkpoint_id=None)
            else:
                values = self.routing.invoke(fresh_input(audio, question, prompt), run)
                result = result_from_state(values, thread_id="", checkpoint_id=None)
        except GraphBubbleUp:
            raise
        except Exception as exc:  # a turn that cannot be routed is still a turn of the conversation
            why = f"routing failed ({type(exc).__name__}: {exc or repr(exc)})"
            log.warning("%s", why, exc_info=exc)
            result, notes = None, [why]
        ref = AudioRef.model_validate(audio)
        transcript = result.answer if result is not None else ""
        samples = self.store.get(ref).samples if ref.path is not None else None  # None: replay, no audio
        cues = None
        if samples is not None:
            try:
                cues = measure_cues(samples, transcript if question is None else None)
            except Exception as exc:  # cues are extra: never worth the turn
                notes.append(f"cues could not be measured ({type(exc).__name__}: {exc})")
        reflection = result.reflection if result is not None else None
        turn = Turn(
            index=len(state.get("turns") or []) + 1,
            audio=ref,
            question=question,
            transcript=transcript,
            action=result.action if result is not None else None,
            probabilities={a.value: round(p, 6) for a, p in reflection.probs.items()} if reflection else None,
            skipped_reason=(result.skipped_reason if result is not None else notes[0]),
            cues=cues,
            asr_prompt=prompt,
            notes=[*(result.notes if result is not None else []), *notes],
            checkpoint_ns=namespace,
            segmented=long,
        )
        return {"routed": turn.model_dump(mode="json")}

    def respond(self, state: AssistantState) -> dict[str, Any]:
        turn = Turn.model_validate(state["routed"])
        index = turn.index
        user = HumanMessage(content=turn_message(turn), id=f"turn-{index}-user")
        messages: list[BaseMessage] = [user]
        if self.chat_model is not None:
            system = SystemMessage(content=self.settings.system_prompt or assistant_system_prompt())
            history = [system, *(state.get("messages") or []), user]
            try:
                answer = self.chat_model.invoke(history)
                reply = _text(answer)
                messages.append(AIMessage(content=reply, id=f"turn-{index}-assistant"))
                turn = turn.model_copy(update={"reply": reply})
            except GraphBubbleUp:
                raise
            except Exception as exc:  # the turn and its transcript stay; the reply is lost, and said so
                why = f"chat model failed ({type(exc).__name__}: {exc or repr(exc)}); no reply"
                log.warning("%s", why, exc_info=exc)
                turn = turn.model_copy(update={"notes": [*turn.notes, why]})
        return {"messages": messages, "turns": [turn.model_dump(mode="json")], "routed": None}

    def build(self) -> StateGraph:
        return _assemble({"listen": self.listen, "route": self.route, "respond": self.respond})


def _text(message: Any) -> str:
    """A chat model's answer as plain text (a string content, or the text blocks of a list content)."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content.strip()
    parts = [c.get("text", "") if isinstance(c, dict) else str(c) for c in content or []]
    return "".join(parts).strip()
