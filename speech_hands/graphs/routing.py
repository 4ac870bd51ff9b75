"""The Speech-Hands routing state machine (reads like the method's figure).

::

    START -> prepare --(silent audio)--------------------------------------------> finish -> END
               |
               +--Send one branch per tool--> perceive (internal + every external, in parallel)
                                                 |
                                              gather --(no candidate at all)----------> finish
                                                 |
               +--Send k draws (k=1: the decision itself)--> reflect (first-token action + probs)
               |                                                |
               |                                              vote (majority over the k draws)
               |                                                |
               |         <internal> -> use_internal --------------------------------> finish
               |         <external> -> use_external --------------------------------> finish
               +-------- <rewrite>  -> rewrite (audio + ALL candidates; while budget left)

After a rewrite the rewritten text becomes the model's own current answer ("internal") and the graph
reflects again: ``<internal>`` accepts the rewrite, ``<external>`` falls back to the tool, ``<rewrite>``
rewrites again until ``max_rewrites`` is spent, after which the latest rewrite is kept (traced).

Every node writes its own timing, and failures are recorded in the state (``outputs[*].error``,
``notes``) instead of raised, so a trace read back from the checkpointer answers "why this route"
without re-running anything.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import wraps
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from speech_hands.audio import AudioStore
from speech_hands.backends.base import OmniBackend
from speech_hands.graphs.state import PerceiveTask, ReflectTask, RoutingState
from speech_hands.graphs.tools import PerceptionTool
from speech_hands.reflection.base import ReflectionInput
from speech_hands.types import (
    Action,
    AudioRef,
    Hypothesis,
    Reflection,
    RewriteRecord,
    ToolError,
    ToolOutput,
)


@dataclass(frozen=True)
class RoutingSettings:
    """Knobs of one compiled graph (see :class:`speech_hands.agent.AgentConfig` for the docs)."""

    n_best: int = 5
    k_samples: int = 1
    max_rewrites: int = 1
    tool_timeout_s: float | None = 300.0
    seed: int = 0
    weighted_vote: bool = True


log = logging.getLogger(__name__)


def _timed(node: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Record the node's wall time into ``timings`` (a list reducer, so parallel branches all count)."""

    def decorate(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
            started_at = time.time()
            started = time.perf_counter()
            update = fn(*args, **kwargs) or {}
            timing = {"node": node, "elapsed_s": time.perf_counter() - started, "started_at": started_at}
            update["timings"] = [*update.get("timings", []), timing]
            return update

        return wrapper

    return decorate


class RoutingGraph:
    """Builds the state machine over one omni backend and a set of perception tools."""

    def __init__(
        self,
        omni: OmniBackend,
        tools: list[PerceptionTool],
        store: AudioStore,
        executor: Executor,
        settings: RoutingSettings | None = None,
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
        self.executor = executor
        self.settings = settings or RoutingSettings()

    @classmethod
    def skeleton(cls) -> RoutingGraph:
        """The graph's shape with no backends: enough to read traces back from a checkpointer or to
        draw it, without loading any model. Running it fails."""
        obj = cls.__new__(cls)
        obj.omni = None  # type: ignore[assignment]
        obj.tools = {}
        obj.store = AudioStore()
        obj.executor = None  # type: ignore[assignment]
        obj.settings = RoutingSettings()
        return obj

    # ----------------------------------------------------------------- helpers over state

    @staticmethod
    def _outputs(state: RoutingState) -> list[ToolOutput]:
        return [ToolOutput.model_validate(o) for o in state.get("outputs") or []]

    def _reflection_input(self, state: RoutingState, *, sample_index: int = 0, n_samples: int = 1) -> ReflectionInput:
        outputs = self._outputs(state)
        original = next((o for o in outputs if o.role == "internal"), None)
        externals = [o for o in outputs if o.role == "external"]
        rewrites = [RewriteRecord.model_validate(r) for r in state.get("rewrites") or []]
        previous = [_rewrite_hypothesis(r) for r in rewrites]
        internal = original
        if previous:
            internal = ToolOutput(tool="rewrite", role="internal", kind=self.omni.kind, hypotheses=[previous[-1]])
        ref = AudioRef.model_validate(state["audio"])
        return ReflectionInput(
            audio=self.store.get(ref),
            question=state.get("question"),
            internal=internal,
            externals=externals,
            round=state.get("round", 0),
            sample_index=sample_index,
            n_samples=n_samples,
            seed=self.settings.seed,
            previous_rewrites=previous,
            original_internal=original,
        )

    # ----------------------------------------------------------------- nodes

    def prepare(self, state: RoutingState) -> dict[str, Any]:
        ref = AudioRef.model_validate(state["audio"])
        if ref.silent:
            return {"skipped_reason": "silent audio: perception skipped (Whisper invents text on silence)"}
        return {"round": 0}

    def perceive(self, task: PerceiveTask) -> dict[str, Any]:
        tool = self.tools[task["tool"]]
        started = time.perf_counter()
        args = {"audio": task["audio"], "question": task.get("question"), "n_best": self.settings.n_best}
        timeout = self.settings.tool_timeout_s
        future = self.executor.submit(tool.tool.invoke, args)
        try:
            output = ToolOutput.model_validate(future.result(timeout=timeout))
            note = [] if output.hypotheses else [f"tool {tool.name} returned no hypothesis"]
        except FutureTimeout:
            future.cancel()
            error = ToolError(type="TimeoutError", message=f"no answer within {timeout} s", timed_out=True)
            output = self._failed(tool, error, started)
            note = [f"tool {tool.name} timed out after {timeout} s; routing goes on without it"]
        except Exception as exc:  # a failing tool never crashes the graph
            error = ToolError(type=type(exc).__name__, message=str(exc) or repr(exc))
            output = self._failed(tool, error, started)
            note = [f"tool {tool.name} failed ({error.type}: {error.message}); routing goes on without it"]
        return {"outputs": [output.model_dump(mode="json")], "notes": note}

    @staticmethod
    def _failed(tool: PerceptionTool, error: ToolError, started: float) -> ToolOutput:
        return ToolOutput(
            tool=tool.name, role=tool.role, kind=tool.kind, error=error, elapsed_s=time.perf_counter() - started
        )

    def gather(self, state: RoutingState) -> dict[str, Any]:
        outputs = self._outputs(state)
        if not any(o.ok for o in outputs):
            reasons = "; ".join(f"{o.tool}: {o.error.message if o.error else 'no hypothesis'}" for o in outputs)
            return {"skipped_reason": f"no tool produced a candidate ({reasons})"}
        return {}

    def reflect(self, task: ReflectTask) -> dict[str, Any]:
        inp = self._reflection_input(task["state"], sample_index=task["sample_index"], n_samples=task["n_samples"])
        notes: list[str] = []
        try:
            reflection = self.omni.reflect(inp, sample=task["n_samples"] > 1)
        except Exception as exc:  # a failing reflection model costs the decision, never the candidates
            why = f"reflection failed ({type(exc).__name__}: {exc or repr(exc)}); kept the internal prediction"
            notes.append(why if task["n_samples"] == 1 else f"draw {task['sample_index']}: {why}")
            log.warning("%s", notes[-1], exc_info=exc)
            reflection = Reflection(
                action=Action.INTERNAL,
                probs={Action.INTERNAL: 1.0, Action.EXTERNAL: 0.0, Action.REWRITE: 0.0},
                raw_token=Action.INTERNAL.token,
                policy="fallback:reflection-failed",
                rationale=why,
            )
        reflection = reflection.model_copy(update={"round": inp.round, "sample_index": task["sample_index"]})
        return {"samples": [reflection.model_dump(mode="json")], "notes": notes}

    def vote(self, state: RoutingState) -> dict[str, Any]:
        current = state.get("round", 0)
        draws = [Reflection.model_validate(s) for s in state.get("samples") or []]
        draws = sorted((d for d in draws if d.round == current), key=lambda d: d.sample_index)
        if len(draws) == 1:
            decided = draws[0]
            return {"reflections": [decided.model_dump(mode="json")], "action": decided.action.value}
        from speech_hands.reflection.vote import majority_vote

        result = majority_vote(draws, weighted=self.settings.weighted_vote)
        decided = result.decision
        tally = result.model_dump(mode="json")
        tally["round"] = current
        return {
            "reflections": [decided.model_dump(mode="json")],
            "votes": [tally],
            "action": decided.action.value,
        }

    def use_internal(self, state: RoutingState) -> dict[str, Any]:
        inp = self._reflection_input(state)
        notes = self._route_notes(state)
        effective = Action.REWRITE if inp.previous_rewrites else Action.INTERNAL
        if inp.internal is not None and inp.internal.top is not None:
            return {"answer": inp.internal.top.text, "action": effective.value, "notes": notes}
        external = next((o for o in inp.externals if o.ok), None)
        assert external is not None and external.top is not None  # gather guarantees one candidate
        notes.append(f"internal prediction missing; fell back to {external.tool}'s top candidate")
        return {"answer": external.top.text, "action": Action.EXTERNAL.value, "notes": notes}

    def use_external(self, state: RoutingState) -> dict[str, Any]:
        inp = self._reflection_input(state)
        decided = Reflection.model_validate((state.get("reflections") or [])[-1])
        usable = [o for o in inp.externals if o.ok]
        chosen = next((o for o in usable if o.tool == decided.external_tool), usable[0] if usable else None)
        if chosen is None:
            assert inp.internal is not None and inp.internal.top is not None
            effective = Action.REWRITE if inp.previous_rewrites else Action.INTERNAL
            return {
                "answer": inp.internal.top.text,
                "action": effective.value,
                "notes": ["no external candidate; kept the internal prediction"],
            }
        rank = min(decided.external_rank, len(chosen.hypotheses) - 1)
        return {"answer": chosen.hypotheses[rank].text, "action": Action.EXTERNAL.value}

    def rewrite(self, state: RoutingState) -> dict[str, Any]:
        inp = self._reflection_input(state)
        try:
            hypothesis = self.omni.rewrite(inp)
        except Exception as exc:  # keep what we have: the (latest) internal prediction
            error = f"{type(exc).__name__}: {exc or repr(exc)}"
            log.warning("rewrite failed (%s); kept the internal prediction", error, exc_info=exc)
            return {"rewrite_error": error, "notes": [f"rewrite failed ({error}); kept the internal prediction"]}
        record = RewriteRecord(
            text=hypothesis.text,
            strategy=hypothesis.source,
            round=inp.round + 1,
            n_candidates=sum(len(o.hypotheses) for o in inp.all_candidates()),
            confidence=math.exp(hypothesis.score) if hypothesis.score is not None else None,
        )
        return {"rewrites": [record.model_dump(mode="json")], "round": inp.round + 1}

    def finish(self, state: RoutingState) -> dict[str, Any]:
        if state.get("skipped_reason"):
            return {"answer": "", "action": None}
        return {}

    def _route_notes(self, state: RoutingState) -> list[str]:
        decided = Reflection.model_validate((state.get("reflections") or [])[-1])
        if decided.action is Action.REWRITE and not state.get("rewrite_error"):
            if state.get("rewrites"):
                return [f"rewrite budget ({self.settings.max_rewrites}) spent; kept the latest rewrite"]
            return ["rewrites are disabled (max_rewrites=0); kept the internal prediction"]
        return []

    # ----------------------------------------------------------------- edges

    def fan_out_perception(self, state: RoutingState) -> list[Send] | str:
        if state.get("skipped_reason"):
            return "finish"
        return [
            Send("perceive", PerceiveTask(tool=name, audio=state["audio"], question=state.get("question")))
            for name in self.tools
        ]

    def fan_out_reflection(self, state: RoutingState) -> list[Send] | str:
        if state.get("skipped_reason"):
            return "finish"
        k = self.settings.k_samples
        snapshot = {key: state.get(key) for key in ("audio", "question", "outputs", "rewrites", "round")}
        return [Send("reflect", ReflectTask(sample_index=i, n_samples=k, state=snapshot)) for i in range(k)]

    def after_rewrite(self, state: RoutingState) -> list[Send] | str:
        """Reflect on the new rewrite, or end on the internal prediction when the rewrite raised."""
        if state.get("rewrite_error"):
            return "use_internal"
        return self.fan_out_reflection(state)

    def route_on_action(self, state: RoutingState) -> str:
        action = Action(state["action"])
        if action is Action.INTERNAL:
            return "use_internal"
        if action is Action.EXTERNAL:
            return "use_external"
        if len(state.get("rewrites") or []) < self.settings.max_rewrites:
            return "rewrite"
        if state.get("rewrites"):
            return "use_internal"  # the internal answer is now the latest rewrite
        decided = Reflection.model_validate((state.get("reflections") or [])[-1])
        better = Action.EXTERNAL if decided.probs[Action.EXTERNAL] > decided.probs[Action.INTERNAL] else Action.INTERNAL
        return "use_external" if better is Action.EXTERNAL else "use_internal"

    # ----------------------------------------------------------------- assembly

    def build(self) -> StateGraph:
        graph = StateGraph(RoutingState)
        graph.add_node("prepare", _timed("prepare")(self.prepare))
        graph.add_node("perceive", _timed("perceive")(self.perceive))
        graph.add_node("gather", _timed("gather")(self.gather))
        graph.add_node("reflect", _timed("reflect")(self.reflect))
        graph.add_node("vote", _timed("vote")(self.vote))
        graph.add_node("use_internal", _timed("use_internal")(self.use_internal))
        graph.add_node("use_external", _timed("use_external")(self.use_external))
        graph.add_node("rewrite", _timed("rewrite")(self.rewrite))
        graph.add_node("finish", _timed("finish")(self.finish))

        graph.add_edge(START, "prepare")
        graph.add_conditional_edges("prepare", self.fan_out_perception, ["perceive", "finish"])
        graph.add_edge("perceive", "gather")
        graph.add_conditional_edges("gather", self.fan_out_reflection, ["reflect", "finish"])
        graph.add_edge("reflect", "vote")
        graph.add_conditional_edges("vote", self.route_on_action, ["use_internal", "use_external", "rewrite"])
        graph.add_conditional_edges("rewrite", self.after_rewrite, ["reflect", "use_internal", "finish"])
        graph.add_edge("use_internal", "finish")
        graph.add_edge("use_external", "finish")
        graph.add_edge("finish", END)
        return graph


def _rewrite_hypothesis(record: RewriteRecord) -> Hypothesis:
    score = math.log(record.confidence) if record.confidence else None
    return Hypothesis(text=record.text, score=score, source=record.strategy, rank=0)
