"""OpenTelemetry spans of a run (extra ``otel``), from LangGraph's callbacks.

Off by default; nothing here is imported unless it is turned on (``AgentConfig(otel=True)``, or
``SPEECH_HANDS_OTEL=1``), so a run without it costs nothing. On, each run gets a
:class:`OTelCallbackHandler` in its config, which turns the run's callback events into spans:

- ``invoke_agent speech-hands`` (the run; ``gen_ai.operation.name=invoke_agent``,
  ``gen_ai.agent.name``, ``gen_ai.conversation.id`` = the thread id, OpenInference ``AGENT``);
- ``execute_tool {name}`` per perception tool call (``gen_ai.tool.name``, ``gen_ai.tool.call.id``,
  OpenInference ``TOOL``), its error recorded on the span;
- ``decision`` per round (OpenInference ``DECISION``: ``speech_hands.decision.action``, the three
  ``speech_hands.decision.p_*``, ``policy``, ``round``, ``route``);
- ``rewrite`` per rewrite (OpenInference ``CHAIN``: strategy, round, candidates, text).

The spans go to the tracer provider given, else the global one; when no SDK provider is set up
globally, :func:`configure_from_env` installs one exporting over OTLP as the standard ``OTEL_*``
variables say (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_SERVICE_NAME``, ...): Phoenix, Langfuse or any OTLP collector (docs/langgraph.md).
"""

from __future__ import annotations

import json
import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

AGENT_NAME = "speech-hands"
_configured = threading.Lock()
_done = False


def configure_from_env() -> None:
    """Install an SDK tracer provider with an OTLP exporter (configured by the ``OTEL_*`` variables)
    unless the application already set one up. Idempotent."""
    global _done
    from opentelemetry import trace

    with _configured:
        if _done:
            return
        _done = True
        current = trace.get_tracer_provider()
        if type(current).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider"):
            return  # the application configured OpenTelemetry itself
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": AGENT_NAME}))
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:  # the exporter is optional: spans then stay in the process
            OTLPSpanExporter = None
        if OTLPSpanExporter is not None:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)


class OTelCallbackHandler(BaseCallbackHandler):
    """One run's callback events as OpenTelemetry spans (see the module docstring)."""

    run_inline = True  # spans open and close in the order the events happen
    raise_error = False

    def __init__(self, *, thread_id: str, tracer_provider: Any = None, agent_name: str = AGENT_NAME) -> None:
        from opentelemetry import trace

        provider = tracer_provider or trace.get_tracer_provider()
        self._trace = trace
        self.tracer = provider.get_tracer("speech_hands")
        self.thread_id = thread_id
        self.agent_name = agent_name
        self._lock = threading.Lock()
        self._parents: dict[UUID, UUID | None] = {}
        self._spans: dict[UUID, Any] = {}
        self._root: UUID | None = None
        self._interrupted = False  # a node paused the run (LangGraph interrupt)

    # ------------------------------------------------------------------ helpers

    def _context_of(self, parent: UUID | None) -> Any:
        while parent is not None:
            if parent in self._spans:
                return self._trace.set_span_in_context(self._spans[parent])
            parent = self._parents.get(parent)
        return None

    def _start(self, run_id: UUID, parent: UUID | None, name: str, attributes: dict[str, Any]) -> None:
        span = self.tracer.start_span(name, context=self._context_of(parent), attributes=attributes)
        self._spans[run_id] = span

    def _end(self, run_id: UUID, attributes: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        span = self._spans.pop(run_id, None)
        if span is None:
            return
        for key, value in (attributes or {}).items():
            if value is not None:
                span.set_attribute(key, value)
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            span.record_exception(error)
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
        span.end()

    # ------------------------------------------------------------------ chains (the run, its nodes)

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        name = kwargs.get("name") or ""
        with self._lock:
            self._parents[run_id] = parent_run_id
            if parent_run_id is None and self._root is None:
                self._root = run_id
                attributes = {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": self.agent_name,
                    "gen_ai.conversation.id": self.thread_id,
                    "openinference.span.kind": "AGENT",
                    "session.id": self.thread_id,
                }
                audio = inputs.get("audio") if isinstance(inputs, dict) else None
                if isinstance(audio, dict):
                    attributes["input.value"] = str(audio.get("path") or audio.get("id"))
                self._start(run_id, None, f"invoke_agent {self.agent_name}", attributes)
            elif name == "vote":
                self._start(run_id, parent_run_id, "decision", {"openinference.span.kind": "DECISION"})
            elif name == "rewrite":
                self._start(run_id, parent_run_id, "rewrite", {"openinference.span.kind": "CHAIN"})

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            span = self._spans.get(run_id)
            if span is None:
                return
            if run_id == self._root:
                self._end_open_children()
                values = outputs if isinstance(outputs, dict) else {}
                attributes = {"output.value": values.get("answer"), "speech_hands.action": values.get("action")}
                if self._interrupted:
                    attributes["speech_hands.interrupted"] = True
                self._end(run_id, attributes)
                return
            attributes = _decision_attributes(outputs) or _rewrite_attributes(outputs)
            self._end(run_id, attributes)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        from langgraph.errors import GraphBubbleUp

        with self._lock:
            if isinstance(error, GraphBubbleUp):  # an interrupt: the run pauses, nothing failed
                self._interrupted = True
                if run_id == self._root:
                    self._end_open_children()
                self._end(run_id, {"speech_hands.interrupted": True})
                return
            if run_id == self._root:
                self._end_open_children()
            self._end(run_id, error=error)

    def _end_open_children(self) -> None:
        for run_id in [r for r in self._spans if r != self._root]:
            self._end(run_id, {"speech_hands.unfinished": True})

    # ------------------------------------------------------------------ tools

    def on_tool_start(
        self,
        serialized: Any,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        inputs: Any = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        with self._lock:
            self._parents[run_id] = parent_run_id
            attributes = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.id": str(run_id),
                "gen_ai.conversation.id": self.thread_id,
                "openinference.span.kind": "TOOL",
                "tool.name": name,
            }
            if isinstance(inputs, dict) and inputs.get("n_best") is not None:
                attributes["speech_hands.n_best"] = int(inputs["n_best"])
            self._start(run_id, parent_run_id, f"execute_tool {name}", attributes)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        attributes: dict[str, Any] = {}
        if isinstance(output, dict):
            hypotheses = output.get("hypotheses") or []
            attributes["speech_hands.tool.n_hypotheses"] = len(hypotheses)
            if hypotheses:
                attributes["output.value"] = hypotheses[0].get("text")
        with self._lock:
            self._end(run_id, attributes)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._end(run_id, error=error)


def _decision_attributes(outputs: Any) -> dict[str, Any] | None:
    if not isinstance(outputs, dict) or not outputs.get("reflections"):
        return None
    decided = outputs["reflections"][-1]
    probs = decided.get("probs") or {}
    attributes = {
        "speech_hands.decision.action": decided.get("action"),
        "speech_hands.decision.policy": decided.get("policy"),
        "speech_hands.decision.round": decided.get("round", 0),
        "speech_hands.decision.route": outputs.get("route"),
        "output.value": decided.get("action"),
    }
    for action in ("internal", "external", "rewrite"):
        value = probs.get(action)
        if value is not None:
            attributes[f"speech_hands.decision.p_{action}"] = float(value)
    return attributes


def _rewrite_attributes(outputs: Any) -> dict[str, Any] | None:
    if not isinstance(outputs, dict):
        return None
    if outputs.get("rewrite_error"):
        return {"speech_hands.rewrite.error": outputs["rewrite_error"]}
    if not outputs.get("rewrites"):
        return None
    record = outputs["rewrites"][-1]
    return {
        "speech_hands.rewrite.strategy": record.get("strategy"),
        "speech_hands.rewrite.round": record.get("round"),
        "speech_hands.rewrite.n_candidates": record.get("n_candidates"),
        "output.value": record.get("text"),
        "metadata": json.dumps({"confidence": record.get("confidence")}),
    }
