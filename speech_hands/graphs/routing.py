"""The Speech-Hands routing state machine (reads like the method's figure).

This figure is the one description of the graph's edges; ``speech-hands graph`` prints the compiled
graph itself as Mermaid (no model is loaded)::

    START --> prepare --(silent audio, or no speech for a speech recogniser)--> finish
                 |
                 | Send: one branch per tool
                 v
              perceive      (internal + every external tool, in parallel)
                 |
                 v
              gather --(no tool produced a candidate)--> finish
                 |
                 | Send: k draws (k = 1: the decision itself)
                 v
         +--> reflect       (first-token action + the probability of each action)
         |       |
         |       v
         |     vote         (majority over the k draws, then the rewrite budget: records ``route``)
         |       |
         |       +--route = use_internal--> use_internal --> finish
         |       +--route = use_external--> use_external --> finish
         |       +--route = rewrite-------> rewrite         (audio + ALL candidates)
         |                                     |
         +--------Send: k draws----------------+--(the rewrite raised)--> use_internal --> finish

    finish --> END

Speech recognition input over 30 s is not routed whole: :mod:`speech_hands.graphs.segments` cuts it
into segments and runs this graph once per segment, as a subgraph (its figure is in that module).

``vote`` decides where the round leads (:func:`route_decision`) and records it in the state, so the
edge after it only reads ``route``: ``<internal>`` and ``<external>`` lead to their nodes;
``<rewrite>`` leads to ``rewrite`` while fewer than ``max_rewrites`` rewrites were made, then to
``use_internal`` (the latest rewrite is kept, and a note says the budget is spent); with
``max_rewrites=0`` it leads to the more probable of the internal and the external side (a tie keeps
the internal one).

After a rewrite the rewritten text becomes the model's own current answer ("internal") and the graph
reflects again: ``<internal>`` accepts the rewrite, ``<external>`` falls back to the tool, ``<rewrite>``
rewrites again until the budget is spent.

A reflection model that raises counts as an ``<internal>`` draw (policy ``fallback:reflection-failed``,
the error in its rationale and in ``notes``); a rewrite that raises ends the loop on the latest internal
answer. Either way the candidates already perceived are kept. A policy or rewrite strategy that fell
back to another one (its name holds ``(fallback:``, e.g. the learned reflector on audio it cannot
score) is noted too: no fallback is silent.

Failover (:mod:`speech_hands.graphs.availability`, docs/failover.md): ``prepare`` asks the agent's
:class:`~speech_hands.graphs.availability.Availability` which external tools take part; one that failed
``after_failures`` times in a row gets no ``perceive`` branch (a ``ToolUnavailable`` output and a note
instead) until its probe is due; ``perceive`` reports each call's outcome, and every availability
change is a ``ToolAvailability`` event and a note. The internal model is never left out.

LangGraph's own machinery carries the rest (docs/langgraph.md): per-run settings come from the run's
context (``context_schema`` = :class:`~speech_hands.graphs.context.RunContext`: n_best, k_samples,
max_rewrites, interrupt_on, interrupt_below); ``vote`` calls ``interrupt()`` before following a decision
a person should confirm (``Command(resume={"action": ...})`` accepts or overrides it); nodes write
typed custom stream events (:mod:`speech_hands.graphs.events`: tool started / finished, decision,
vote, rewrite); ``perceive`` has a ``CachePolicy`` keyed on (tool, audio sha256, question, n_best, the
digest of the ASR prompt), and
the nodes calling a remote backend a ``RetryPolicy`` on connection errors (:meth:`RoutingGraph.policies`);
each tool is invoked with its node's config, so callbacks see one tool run per perception call.

Every node writes its own timing, and failures are recorded in the state (``outputs[*].error``,
``notes``) instead of raised, so a trace read back from the checkpointer answers "why this route"
without re-running anything. :func:`graph_shape` builds the same nodes and edges with no backends
behind them, to read traces back or draw the graph without loading a model.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy, RetryPolicy, Send, interrupt

from speech_hands.audio import MIN_SPEECH_S, SAMPLE_RATE, AudioStore, speech_seconds
from speech_hands.backends.base import OmniBackend
from speech_hands.errors import ConfigurationError
from speech_hands.graphs.availability import Availability
from speech_hands.graphs.calls import ToolBusy, ToolCalls, ToolTimeout
from speech_hands.graphs.context import RunContext, run_settings
from speech_hands.graphs.events import (
    DecisionEvent,
    ReviewRequest,
    RewriteEvent,
    ToolAvailability,
    ToolFinished,
    ToolStarted,
    VoteEvent,
    emit,
)
from speech_hands.graphs.state import PerceiveTask, ReflectTask, RoutingState, StateView
from speech_hands.graphs.tools import PerceptionTool, implausible
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.decision import certain
from speech_hands.reflection.vote import majority_vote
from speech_hands.types import Action, Hypothesis, Reflection, RewriteRecord, ToolError, ToolOutput

log = logging.getLogger(__name__)

#: How a policy or rewrite strategy that fell back to another one marks its name (e.g.
#: ``learned-reflector(fallback:confidence)``); the graph turns it into a note.
FALLBACK_MARK = "(fallback:"

#: Every node, in the figure's order, with the input it receives: a ``Send`` payload for the two
#: parallel fan-outs, the whole state for the others.
NODE_INPUTS: dict[str, type] = {
    "prepare": RoutingState,
    "perceive": PerceiveTask,
    "gather": RoutingState,
    "reflect": ReflectTask,
    "vote": RoutingState,
    "use_internal": RoutingState,
    "use_external": RoutingState,
    "rewrite": RoutingState,
    "finish": RoutingState,
}

#: The unconditional edges.
EDGES: tuple[tuple[str, str], ...] = (
    (START, "prepare"),
    ("perceive", "gather"),
    ("reflect", "vote"),
    ("use_internal", "finish"),
    ("use_external", "finish"),
    ("finish", END),
)

#: The conditional edges: each source node and every node its edge may lead to.
BRANCHES: dict[str, tuple[str, ...]] = {
    "prepare": ("perceive", "finish"),
    "gather": ("reflect", "finish"),
    "vote": ("use_internal", "use_external", "rewrite"),
    "rewrite": ("reflect", "use_internal"),
}


@dataclass(frozen=True)
class RoutingSettings:
    """Knobs of one compiled graph (see :class:`speech_hands.agent.AgentConfig` for the docs)."""

    n_best: int = 5
    k_samples: int = 1
    max_rewrites: int = 1
    tool_timeout_s: float | None = 300.0
    seed: int = 0
    weighted_vote: bool = True
    detect_speech: bool = True
    #: ask a person (LangGraph ``interrupt``) before following these actions' edges ...
    interrupt_on: tuple[Action, ...] = ()
    #: ... or a decision whose own probability is below this
    interrupt_below: float | None = None
    #: attempts of a node that calls a remote backend, when the call fails with a connection error
    retry_attempts: int = 3


def is_connection_error(exc: BaseException) -> bool:
    """A failure worth retrying: the backend could not be reached (not a bad answer, not a time-out)."""
    return isinstance(exc, ConnectionError)


def node_attempt() -> int:
    """The attempt (1-based) of the node running now, as LangGraph's retry policy counts it."""
    from langgraph.runtime import get_runtime

    try:
        info = get_runtime().execution_info
    except (RuntimeError, AttributeError):
        return 1
    return info.node_attempt if info is not None else 1


def perception_cache_key(task: PerceiveTask) -> str:
    """The ``CachePolicy`` key of one perception call: tool, audio (sha256), N-best size, question and the
    ASR prompt's digest (the same audio after other earlier turns is another call)."""
    audio = task.get("audio") or {}
    identity = audio.get("sha256") or f"id:{audio.get('id')}"
    prompt = task.get("prompt")
    context = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16] if prompt else ""
    return f"{task.get('tool')}|{identity}|{task.get('n_best')}|{context}|{task.get('question') or ''}"


def review_reason(decided: Reflection, settings: RoutingSettings) -> str | None:
    """Why a person is asked to confirm ``decided`` (None: they are not)."""
    if decided.action in settings.interrupt_on:
        return f"{decided.action.token} is in interrupt_on"
    chosen = decided.probs.get(decided.action, 0.0)
    if settings.interrupt_below is not None and chosen < settings.interrupt_below:
        return f"P({decided.action.token}) = {chosen:.3f} is below interrupt_below = {settings.interrupt_below}"
    return None


def review_answer(value: Any) -> Action | None:
    """The action a person chose when resuming (``Command(resume=...)``): ``None`` / ``"accept"`` /
    ``{"action": None}`` accept the decision; ``"external"``, ``"<external>"``, ``{"action": "external"}``
    override it."""
    if isinstance(value, Mapping):
        value = value.get("action")
    if value is None or isinstance(value, Action):
        return value
    if isinstance(value, str):
        if value.strip().lower() in ("", "accept", "ok", "yes"):
            return None
        try:
            return Action.from_token(value)
        except ValueError:
            pass
    raise ConfigurationError(
        f"cannot resume with {value!r}: give None or 'accept' to keep the decision, or one of "
        "'internal', 'external', 'rewrite' to override it"
    )


@dataclass(frozen=True)
class Route:
    """Where a round's decision leads, and the trace note explaining a ``<rewrite>`` that did not lead to
    ``rewrite`` (none for the ``max_rewrites=0`` fallback to the external side)."""

    node: str
    note: str | None = None


def route_decision(decided: Reflection, *, rewrites_done: int, max_rewrites: int) -> Route:
    """The node a decision leads to: its own action's node, except ``<rewrite>`` once ``max_rewrites``
    rewrites were made (keep the latest rewrite) or when rewrites are disabled (the more probable of
    internal and external)."""
    if decided.action is Action.INTERNAL:
        return Route("use_internal")
    if decided.action is Action.EXTERNAL:
        return Route("use_external")
    if rewrites_done < max_rewrites:
        return Route("rewrite")
    if rewrites_done:  # the internal answer is now the latest rewrite
        return Route("use_internal", f"rewrite budget ({max_rewrites}) spent; kept the latest rewrite")
    if decided.probs[Action.EXTERNAL] > decided.probs[Action.INTERNAL]:
        return Route("use_external")
    return Route("use_internal", "rewrites are disabled (max_rewrites=0); kept the internal prediction")


def follow_route(state: RoutingState) -> str:
    """The edge after ``vote``: the node ``vote`` recorded."""
    return state["route"]


def _timed(node: str, fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``fn`` recording its wall time into ``timings`` (a list reducer, so parallel branches all count)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        started_at = time.time()
        started = time.perf_counter()
        update = fn(*args, **kwargs) or {}
        timing = {"node": node, "elapsed_s": time.perf_counter() - started, "started_at": started_at}
        update["timings"] = [*update.get("timings", []), timing]
        return update

    return wrapper


def _assemble(
    nodes: Mapping[str, Callable[..., Any]],
    branches: Mapping[str, Callable[..., Any]],
    policies: Mapping[str, Mapping[str, Any]] | None = None,
) -> StateGraph:
    """The graph of :data:`NODE_INPUTS`, :data:`EDGES` and :data:`BRANCHES` over the given node and
    edge functions: the one place the wiring is written, for the real graph and its shape alike.
    ``policies``: per node, its ``retry_policy`` / ``cache_policy`` (LangGraph's own)."""
    graph = StateGraph(RoutingState, context_schema=RunContext)
    for name, input_schema in NODE_INPUTS.items():
        extra = dict((policies or {}).get(name, {}))
        graph.add_node(name, _timed(name, nodes[name]), input_schema=input_schema, **extra)
    for source, target in EDGES:
        graph.add_edge(source, target)
    for source, targets in BRANCHES.items():
        graph.add_conditional_edges(source, branches[source], list(targets))
    return graph


def graph_shape() -> StateGraph:
    """The routing graph's nodes and edges with no backends behind them: enough to read traces back
    from a checkpointer or to draw the graph without loading any model. Running it raises."""

    def unbacked(name: str) -> Callable[..., Any]:
        def run(*_: Any, **__: Any) -> Any:
            raise RuntimeError(f"{name!r} has no backend in graph_shape(); build a RoutingGraph to run the graph")

        return run

    return _assemble({name: unbacked(name) for name in NODE_INPUTS}, {name: unbacked(name) for name in BRANCHES})


class RoutingGraph:
    """Builds the state machine over one omni backend and a set of perception tools."""

    def __init__(
        self,
        omni: OmniBackend,
        tools: list[PerceptionTool],
        store: AudioStore,
        settings: RoutingSettings | None = None,
        calls: ToolCalls | None = None,
        availability: Availability | None = None,
    ) -> None:
        internal = [t for t in tools if t.role == "internal"]
        if len(internal) != 1:
            raise ValueError(f"exactly one internal perception tool is needed, got {len(internal)}")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"perception tool names must be unique, got {names}")
        self.omni = omni
        self.tools = {t.name: t for t in tools}
        self.store = store
        self.calls = calls or ToolCalls()
        # failover: the external tools that take part in routing now (shared by every run of this graph)
        self.availability = availability or Availability([t.name for t in tools if t.role == "external"])
        self.settings = settings or RoutingSettings()
        self.remote_omni = bool(getattr(omni, "remote", False))

    # ----------------------------------------------------------------- helpers over the state

    def _current_internal(self, view: StateView) -> ToolOutput | None:
        """The model's own current answer: the latest rewrite once there is one, else its prediction."""
        if not view.rewrites:
            return view.original_internal
        latest = _rewrite_hypothesis(view.rewrites[-1])
        return ToolOutput(tool="rewrite", role="internal", kind=self.omni.kind, hypotheses=[latest])

    def _reflection_input(self, view: StateView, *, sample_index: int = 0, n_samples: int = 1) -> ReflectionInput:
        return ReflectionInput(
            audio=self.store.get(view.audio),
            question=view.question,
            internal=self._current_internal(view),
            externals=list(view.externals),
            round=view.round,
            sample_index=sample_index,
            n_samples=n_samples,
            seed=self.settings.seed,
            previous_rewrites=[_rewrite_hypothesis(r) for r in view.rewrites],
            original_internal=view.original_internal,
        )

    def _internal_answer(self, view: StateView) -> dict[str, Any] | None:
        """The update that answers with the model's own current answer (action ``rewrite`` when that is
        a rewrite), or ``None`` when there is none (the internal tool failed and nothing was rewritten)."""
        internal = self._current_internal(view)
        if internal is None or internal.top is None:
            return None
        effective = Action.REWRITE if view.rewrites else Action.INTERNAL
        return {"answer": internal.top.text, "action": effective.value}

    # ----------------------------------------------------------------- nodes

    def prepare(self, state: RoutingState) -> dict[str, Any]:
        audio = StateView(state).audio
        if audio.silent:
            return {"skipped_reason": "silent audio: perception skipped (Whisper invents text on silence)"}
        if self.settings.detect_speech and self.omni.kind == "asr":  # audio QA is about any sound
            samples = self.store.get(audio).samples
            if samples is not None and (found := speech_seconds(samples)) < MIN_SPEECH_S:
                return {
                    "skipped_reason": f"no speech: voice-activity detection found {found:.2f} s of speech in "
                    f"{audio.duration_s or samples.size / SAMPLE_RATE:.2f} s of audio; perception skipped "
                    "(Whisper invents text for non-speech; detect_speech=False turns this off)"
                }
        return {"round": 0, **self._admit()}

    def _admit(self) -> dict[str, Any]:
        """Failover: which external tools this run leaves out (recorded as failed outputs, error type
        ``ToolUnavailable``, without calling them) and which it probes; availability changes are traced."""
        unavailable, probing, outputs, notes = [], [], [], []
        for tool in self.tools.values():
            admission = self.availability.admit(tool.name)
            if admission.change is not None:
                _announce(admission.change, notes)
            if admission.probe:
                probing.append(tool.name)
            if admission.call:
                continue
            unavailable.append(tool.name)
            error = ToolError(type="ToolUnavailable", message=admission.reason or "unavailable")
            outputs.append(
                ToolOutput(tool=tool.name, role=tool.role, kind=tool.kind, error=error).model_dump(mode="json")
            )
            notes.append(f"tool {tool.name} is {admission.reason}; not called")
        update: dict[str, Any] = {"unavailable": unavailable, "probing": probing}
        if outputs:
            update["outputs"] = outputs
        if notes:
            update["notes"] = notes
        return update

    def perceive(self, task: PerceiveTask) -> dict[str, Any]:
        tool = self.tools[task["tool"]]
        started = time.perf_counter()
        n_best = task.get("n_best") or run_settings(self.settings).n_best
        prompt = task.get("prompt")
        args = {"audio": task["audio"], "question": task.get("question"), "n_best": n_best, "prompt": prompt}
        timeout = self.settings.tool_timeout_s
        audio_id = str(task["audio"].get("id"))
        emit(ToolStarted(tool=tool.name, role=tool.role, n_best=n_best, audio_id=audio_id))
        try:
            # the node's config (callbacks, tags, metadata) goes with the call into the tool's own thread,
            # so the tool's run is a child of this node's run
            raw = self.calls.call(tool.name, tool.tool.invoke, args, _node_config(), timeout_s=timeout)
            output = ToolOutput.model_validate(raw)
            duration = StateView(task).audio.duration_s
            note = [
                f"tool {tool.name}: set aside an implausible candidate ({implausible(h.text, tool.kind, duration)}): "
                f"{h.text[:60]!r}{'...' if len(h.text) > 60 else ''}"
                for h in output.rejected
            ]
            if not output.hypotheses:
                note.append(f"tool {tool.name} returned no hypothesis")
            if prompt and tool.kind == "asr" and not tool.takes_prompt:
                note.append(f"tool {tool.name} takes no text prompt; it ran without the earlier text")
        except (ToolTimeout, ToolBusy) as exc:
            kind = "TimeoutError" if isinstance(exc, ToolTimeout) else type(exc).__name__
            error = ToolError(type=kind, message=str(exc), timed_out=True)
            output = self._failed(tool, error, started)
            why = f"timed out after {timeout} s" if isinstance(exc, ToolTimeout) else f"is busy ({exc})"
            note = [f"tool {tool.name} {why}; routing goes on without it"]
        except Exception as exc:  # a failing tool never crashes the graph
            if tool.remote and self._retry(exc):
                raise  # LangGraph's RetryPolicy runs this branch again
            error = ToolError(type=type(exc).__name__, message=str(exc) or repr(exc))
            output = self._failed(tool, error, started)
            note = [f"tool {tool.name} failed ({error.type}: {error.message}); routing goes on without it"]
        change = self.availability.record(tool.name, _failure(output), probe=bool(task.get("probe")))
        if change is not None:
            _announce(change, note)
        emit(
            ToolFinished(
                tool=tool.name,
                role=tool.role,
                elapsed_s=round(time.perf_counter() - started, 4),
                ok=output.ok,
                n_hypotheses=len(output.hypotheses),
                top=output.top.text if output.top is not None else None,
                error=f"{output.error.type}: {output.error.message}" if output.error else None,
            )
        )
        return {"outputs": [output.model_dump(mode="json")], "notes": note}

    def _retry(self, exc: BaseException) -> bool:
        """Whether a remote call that raised ``exc`` is retried by the node's ``RetryPolicy``: a
        connection error with attempts left (the last attempt records the failure instead)."""
        return is_connection_error(exc) and node_attempt() < self.settings.retry_attempts

    @staticmethod
    def _failed(tool: PerceptionTool, error: ToolError, started: float) -> ToolOutput:
        return ToolOutput(
            tool=tool.name, role=tool.role, kind=tool.kind, error=error, elapsed_s=time.perf_counter() - started
        )

    def gather(self, state: RoutingState) -> dict[str, Any]:
        outputs = StateView(state).outputs
        if not any(o.ok for o in outputs):
            reasons = "; ".join(f"{o.tool}: {o.error.message if o.error else 'no hypothesis'}" for o in outputs)
            return {"skipped_reason": f"no tool produced a candidate ({reasons})"}
        return {}

    def reflect(self, task: ReflectTask) -> dict[str, Any]:
        index, n_samples = task["sample_index"], task["n_samples"]
        inp = self._reflection_input(StateView(task["state"]), sample_index=index, n_samples=n_samples)
        notes: list[str] = []
        try:
            reflection = _checked_reflection(self.omni.reflect(inp, sample=n_samples > 1))
        except Exception as exc:  # a failing (or nonsense-returning) model costs the decision, never the candidates
            if self.remote_omni and self._retry(exc):
                raise  # LangGraph's RetryPolicy runs this draw again
            why = f"reflection failed ({type(exc).__name__}: {exc or repr(exc)}); kept the internal prediction"
            notes.append(why if n_samples == 1 else f"draw {index}: {why}")
            log.warning("%s", notes[-1], exc_info=exc)
            reflection = certain(Action.INTERNAL, policy="fallback:reflection-failed", rationale=why)
        reflection = reflection.model_copy(update={"round": inp.round, "sample_index": index})
        if FALLBACK_MARK in reflection.policy:  # a policy that fell back to another one says so in its name
            why = f"reflection fell back ({reflection.policy}): {reflection.rationale or 'no reason given'}"
            notes.append(why if n_samples == 1 else f"draw {index}: {why}")
        return {"samples": [reflection.model_dump(mode="json")], "notes": notes}

    def vote(self, state: RoutingState) -> dict[str, Any]:
        """The round's decision (the single draw, or the majority when k > 1) and its route; a person
        is asked first (LangGraph ``interrupt``) when ``interrupt_on`` / ``interrupt_below`` say so."""
        view = StateView(state)
        settings = run_settings(self.settings)
        draws = sorted((d for d in view.samples if d.round == view.round), key=lambda d: d.sample_index)
        update: dict[str, Any] = {}
        notes: list[str] = []
        if len(draws) == 1:
            decided = draws[0]
        else:
            result = majority_vote(draws, weighted=self.settings.weighted_vote)
            decided = result.decision
            update["votes"] = [{**result.model_dump(mode="json"), "round": view.round}]
            tally = {k: round(v, 6) for k, v in result.tally.items()}
            emit(VoteEvent(round=view.round, tally=tally, winner=result.key, tie_broken_by=result.tie_broken_by))
        route = route_decision(decided, rewrites_done=len(view.rewrites), max_rewrites=settings.max_rewrites)
        reviewed = False
        if (why := review_reason(decided, settings)) is not None:
            request = ReviewRequest(
                round=view.round,
                action=decided.action.value,
                probs={a.value: p for a, p in decided.probs.items()},
                policy=decided.policy,
                route=route.node,
                why=why,
                candidates={o.tool: o.top.text for o in view.outputs if o.top is not None},
            )
            chosen = review_answer(interrupt(request.model_dump(mode="json")))
            reviewed = True
            if chosen is None or chosen is decided.action:
                notes.append(f"a person accepted {decided.action.token} ({why})")
            else:
                notes.append(f"a person overrode {decided.action.token} with {chosen.token} ({why})")
                decided = decided.model_copy(
                    update={"action": chosen, "policy": f"{decided.policy}+review", "rationale": why}
                )
                route = route_decision(decided, rewrites_done=len(view.rewrites), max_rewrites=settings.max_rewrites)
        update |= {
            "reflections": [decided.model_dump(mode="json")],
            "action": decided.action.value,
            "route": route.node,
        }
        if route.note:
            notes.append(route.note)
        if notes:
            update["notes"] = notes
        emit(
            DecisionEvent(
                round=view.round,
                action=decided.action.value,
                probs={a.value: p for a, p in decided.probs.items()},
                policy=decided.policy,
                route=route.node,
                n_draws=len(draws),
                reviewed=reviewed,
            )
        )
        return update

    def use_internal(self, state: RoutingState) -> dict[str, Any]:
        view = StateView(state)
        kept = self._internal_answer(view)
        if kept is not None:
            return kept
        external = next((o for o in view.externals if o.ok), None)
        assert external is not None and external.top is not None  # gather guarantees one candidate
        return {
            "answer": external.top.text,
            "action": Action.EXTERNAL.value,
            "notes": [f"internal prediction missing; fell back to {external.tool}'s top candidate"],
        }

    def use_external(self, state: RoutingState) -> dict[str, Any]:
        view = StateView(state)
        decided = view.decided
        assert decided is not None  # vote always runs first
        usable = [o for o in view.externals if o.ok]
        chosen = next((o for o in usable if o.tool == decided.external_tool), usable[0] if usable else None)
        if chosen is None:
            kept = self._internal_answer(view)
            assert kept is not None  # gather guarantees one candidate, and it is not external
            return {**kept, "notes": ["no external candidate; kept the internal prediction"]}
        rank = min(decided.external_rank, len(chosen.hypotheses) - 1)
        update: dict[str, Any] = {"answer": chosen.hypotheses[rank].text, "action": Action.EXTERNAL.value}
        if rank != decided.external_rank:
            update["notes"] = [
                f"the reflection named rank {decided.external_rank} of {chosen.tool}, which returned "
                f"{len(chosen.hypotheses)}; took its last candidate"
            ]
        return update

    def rewrite(self, state: RoutingState) -> dict[str, Any]:
        inp = self._reflection_input(StateView(state))
        candidates = [o.top.text for o in inp.all_candidates() if o.top is not None]
        try:
            hypothesis = self.omni.rewrite(inp)
        except Exception as exc:  # keep what we have: the (latest) internal prediction
            if self.remote_omni and self._retry(exc):
                raise  # LangGraph's RetryPolicy runs the rewrite again
            error = f"{type(exc).__name__}: {exc or repr(exc)}"
            emit(RewriteEvent(round=inp.round + 1, strategy="", text="", n_candidates=0, error=error))
            log.warning("rewrite failed (%s); kept the internal prediction", error, exc_info=exc)
            return {"rewrite_error": error, "notes": [f"rewrite failed ({error}); kept the internal prediction"]}
        notes = []
        if FALLBACK_MARK in (hypothesis.source or ""):
            notes.append(f"rewrite fell back ({hypothesis.source})")
        record = RewriteRecord(
            text=hypothesis.text,
            strategy=hypothesis.source,
            round=inp.round + 1,
            n_candidates=sum(len(o.hypotheses) for o in inp.all_candidates()),
            confidence=math.exp(hypothesis.score) if hypothesis.score is not None else None,
        )
        update: dict[str, Any] = {"rewrites": [record.model_dump(mode="json")], "round": inp.round + 1}
        emit(
            RewriteEvent(
                round=record.round,
                strategy=record.strategy,
                text=record.text,
                n_candidates=record.n_candidates,
                candidates=candidates,
            )
        )
        if notes:
            update["notes"] = notes
        return update

    def finish(self, state: RoutingState) -> dict[str, Any]:
        if StateView(state).skipped_reason:
            return {"answer": "", "action": None}
        return {}

    # ----------------------------------------------------------------- edges (read the state only)

    def fan_out_perception(self, state: RoutingState) -> list[Send] | str:
        """One perception branch per tool, or straight to ``finish`` when ``prepare`` skipped the run."""
        if state.get("skipped_reason"):
            return "finish"
        n_best = run_settings(self.settings).n_best
        prompt = state.get("prompt")
        left_out, probing = set(state.get("unavailable") or ()), set(state.get("probing") or ())
        return [
            Send(
                "perceive",
                PerceiveTask(
                    tool=name,
                    audio=state["audio"],
                    question=state.get("question"),
                    n_best=n_best,
                    probe=name in probing,
                    prompt=prompt,
                ),
            )
            for name in self.tools
            if name not in left_out
        ]

    def fan_out_reflection(self, state: RoutingState) -> list[Send] | str:
        """The k reflection draws, or straight to ``finish`` when no tool produced a candidate."""
        if state.get("skipped_reason"):
            return "finish"
        return self._reflection_draws(state)

    def after_rewrite(self, state: RoutingState) -> list[Send] | str:
        """Reflect on the new rewrite, or end on the internal prediction when the rewrite raised."""
        if state.get("rewrite_error"):
            return "use_internal"
        return self._reflection_draws(state)

    def _reflection_draws(self, state: RoutingState) -> list[Send]:
        k = run_settings(self.settings).k_samples
        snapshot = {key: state.get(key) for key in ("audio", "question", "outputs", "rewrites", "round")}
        return [Send("reflect", ReflectTask(sample_index=i, n_samples=k, state=snapshot)) for i in range(k)]

    # ----------------------------------------------------------------- assembly

    def build(self) -> StateGraph:
        nodes = {
            "prepare": self.prepare,
            "perceive": self.perceive,
            "gather": self.gather,
            "reflect": self.reflect,
            "vote": self.vote,
            "use_internal": self.use_internal,
            "use_external": self.use_external,
            "rewrite": self.rewrite,
            "finish": self.finish,
        }
        branches = {
            "prepare": self.fan_out_perception,
            "gather": self.fan_out_reflection,
            "vote": follow_route,
            "rewrite": self.after_rewrite,
        }
        return _assemble(nodes, branches, self.policies())

    def policies(self) -> dict[str, dict[str, Any]]:
        """LangGraph node policies: ``perceive`` is cached on (tool, audio sha256, question, N-best size)
        when the graph is compiled with a cache (``compile(cache=InMemoryCache())``); the nodes that call
        a remote backend retry on connection errors (``RetryPolicy``), ``retry_attempts`` attempts."""
        retry = RetryPolicy(max_attempts=self.settings.retry_attempts, retry_on=is_connection_error)
        policies: dict[str, dict[str, Any]] = {"perceive": {"cache_policy": CachePolicy(key_func=perception_cache_key)}}
        if any(t.remote for t in self.tools.values()):
            policies["perceive"]["retry_policy"] = retry
        if self.remote_omni:
            policies["reflect"] = {"retry_policy": retry}
            policies["rewrite"] = {"retry_policy": retry}
        return policies


def _node_config() -> dict[str, Any] | None:
    """The running node's config (None outside a run), handed explicitly to the tool it calls."""
    from langgraph.config import get_config

    try:
        config = get_config()
    except RuntimeError:
        return None
    # the tool's run takes its own name and id; everything else (callbacks, tags, metadata) is inherited
    return {k: v for k, v in config.items() if k not in ("run_name", "run_id")}


def _failure(output: ToolOutput) -> str | None:
    """Why a perception call counts as failed for failover (None: a good answer): an error or time-out,
    or candidates that were all set aside as implausible."""
    if output.error is not None:
        return f"{output.error.type}: {output.error.message}"
    if output.rejected and not output.hypotheses:
        return f"only implausible candidates ({len(output.rejected)})"
    return None


def _announce(change: ToolAvailability, notes: list[str]) -> None:
    """An availability change into the run's custom stream, its trace notes and the log."""
    emit(change)
    notes.append(change.message)
    log.warning("%s", change.message)


def _checked_reflection(value: Any) -> Reflection:
    """What a reflection model returned, validated: a dict or a model with an invalid action,
    probabilities or rank raises here, inside the node's fallback, instead of later in the graph."""
    data = value.model_dump(warnings=False) if isinstance(value, Reflection) else value
    if not isinstance(data, Mapping):
        raise TypeError(f"the reflection model returned {type(value).__name__}, not a Reflection")
    return Reflection.model_validate(data)


def _rewrite_hypothesis(record: RewriteRecord) -> Hypothesis:
    score = math.log(record.confidence) if record.confidence else None
    return Hypothesis(text=record.text, score=score, source=record.strategy, rank=0)
