"""The LangGraph server: ``langgraph dev`` (langgraph-cli[inmem]) serving ``langgraph.json``'s graph,
driven with langgraph-sdk over loopback, on the REAL default agent and real speech; and the server
graph's input handling (schemas, bad input, base64, long audio) in process."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest
from doubles import CountingRewriter, FixedASR, ScriptedPolicy
from helpers import REPO, dev_flac
from loopback import free_port, server_process

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni
from speech_hands.graphs.events import DecisionEvent, ToolFinished, parse_event

UTT = "1688-142285-0007"


# --------------------------------------------------------------------- in process, test doubles for the models


@pytest.fixture()
def graph(tmp_path):
    from langgraph.checkpoint.memory import InMemorySaver

    from speech_hands.agent.server import build_server_graph

    omni = ComposedOmni(FixedASR("internal-asr", ["a b c"]), ScriptedPolicy([Action.EXTERNAL]), CountingRewriter())
    agent = SpeechHands(omni, [FixedASR("external-asr", ["a b d", "a b e"])], config=AgentConfig(trace_db=":memory:"))
    compiled = build_server_graph(agent).compile(checkpointer=InMemorySaver())
    yield compiled
    agent.close()


def run(graph, payload, thread="t", **kwargs):
    return graph.invoke(payload, {"configurable": {"thread_id": thread}}, **kwargs)


def test_input_and_output_schemas_are_plain_json(graph):
    schema = graph.get_input_jsonschema()
    assert set(schema["properties"]) == {"audio", "audio_b64", "question", "utterance_id", "prompt"}
    output = graph.get_output_jsonschema()
    assert {"answer", "action", "outputs", "reflections", "notes"} <= set(output["properties"])
    context = graph.get_context_jsonschema()
    assert {"n_best", "k_samples", "max_rewrites", "interrupt_on", "interrupt_below"} <= set(context["properties"])
    json.dumps([schema, output, context])


def test_the_inputs_prompt_reaches_the_recognisers_that_take_one(shared_data):
    from langgraph.checkpoint.memory import InMemorySaver

    from speech_hands.agent.server import build_server_graph

    class Prompted(FixedASR):
        def transcribe(self, audio, n_best: int = 5, prompt: str | None = None):
            self.prompts.append(prompt)
            return super().transcribe(audio, n_best)

    internal = Prompted("internal-asr", ["a b c"])
    internal.prompts = []
    omni = ComposedOmni(internal, ScriptedPolicy([Action.INTERNAL]), CountingRewriter())
    agent = SpeechHands(omni, [FixedASR("external-asr", ["a b d"])], config=AgentConfig(trace_db=":memory:"))
    compiled = build_server_graph(agent).compile(checkpointer=InMemorySaver())
    out = run(compiled, {"audio": str(dev_flac(UTT)), "prompt": "what was said before"})
    assert internal.prompts == ["what was said before"] and out["answer"] == "a b c"
    assert any(n.startswith("tool external-asr takes no text prompt") for n in out["notes"])
    agent.close()


def test_a_path_and_base64_give_the_same_answer(graph, shared_data):
    by_path = run(graph, {"audio": str(dev_flac(UTT))}, "p")
    data = base64.b64encode(dev_flac(UTT).read_bytes()).decode()
    by_bytes = run(graph, {"audio_b64": f"data:audio/flac;base64,{data}"}, "b", context={"n_best": 1})
    assert by_path["answer"] == by_bytes["answer"] == "a b d" and by_path["action"] == "external"
    assert by_path["audio"]["sha256"] == by_bytes["audio"]["sha256"]  # the upload is the same file
    assert [len(o["hypotheses"]) for o in by_bytes["outputs"] if o["role"] == "external"] == [1]
    assert set(by_path) <= {"answer", "action", "audio", "outputs", "reflections", "rewrites", "results", "notes"} | {
        "skipped_reason"
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"audio": "/no/such/file.flac"}, r"AudioError: audio file not found: /no/such/file.flac"),
        ({"audio_b64": "not base64!"}, r"ConfigurationError: audio_b64 is not valid base64"),
        ({}, r"give exactly one of"),
        ({"audio_b64": base64.b64encode(b"not audio at all").decode()}, r"AudioError"),
    ],
)
def test_bad_input_fails_with_a_clear_error(graph, payload, message):
    from speech_hands.agent.server import InvalidInput

    with pytest.raises(InvalidInput, match=message):
        run(graph, payload)


def test_a_review_pauses_the_server_graph_and_a_command_resumes_it(graph, shared_data):
    from langgraph.types import Command

    context = {"interrupt_on": ["external"]}
    paused = run(graph, {"audio": str(dev_flac(UTT))}, "review", context=context)
    (request,) = paused["__interrupt__"]
    assert request.value["action"] == "external" and request.value["event"] == "review"
    done = run(graph, Command(resume={"action": "internal"}), "review", context=context)
    assert done["answer"] == "a b c" and done["action"] == "internal"
    assert any("overrode <external> with <internal>" in n for n in done["notes"])


def test_long_audio_goes_through_the_segmenting_subgraph(graph, tmp_path, shared_data):
    import numpy as np
    from helpers import write_wav

    from speech_hands.audio import load_audio

    utts = ["2609-156975-0007", "3331-159605-0008", "2033-164914-0008"]
    long_wav = write_wav(tmp_path / "long.wav", np.concatenate([load_audio(dev_flac(u)).samples for u in utts]))
    out = run(graph, {"audio": str(long_wav)})
    assert len(out["results"]) >= 2 and out["action"] == "external"


# --------------------------------------------------------------------- langgraph dev + langgraph-sdk, the real agent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``langgraph dev`` on a free loopback port, started in a scratch folder (its .langgraph_api state
    goes there), stopped at the end whatever happens."""
    port = free_port()
    folder = tmp_path_factory.mktemp("langgraph-dev")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # offline: no telemetry
        "LANGSMITH_TRACING": "false",
    }
    cli = Path(sys.executable).with_name("langgraph")
    command = [str(cli), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--config", str(REPO / "langgraph.json")]
    url = f"http://127.0.0.1:{port}"
    with server_process(command, folder=folder, env=env, ready_url=f"{url}/ok", name="langgraph dev", timeout_s=120):
        yield url


@pytest.mark.slow
def test_langgraph_dev_runs_the_real_default_agent(server, shared_data, dev_references):
    from langgraph_sdk import get_sync_client

    from speech_hands.metrics.wer import word_errors

    client = get_sync_client(url=server)
    (assistant,) = client.assistants.search(graph_id="speech_hands")
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    assert set(schemas["input_schema"]["properties"]) == {"audio", "audio_b64", "question", "utterance_id", "prompt"}

    thread = client.threads.create()
    chunks = list(
        client.runs.stream(
            thread["thread_id"],
            "speech_hands",
            input={"audio": str(dev_flac(UTT))},
            stream_mode=["updates", "custom"],
            stream_subgraphs=True,
        )
    )
    updates = [c for c in chunks if c.event.startswith("updates")]
    custom = [parse_event(c.data) for c in chunks if c.event.startswith("custom")]
    inner_nodes = {node for c in updates if "|" in c.event for node in c.data}
    assert {"prepare", "perceive", "gather", "reflect", "vote", "finish"} <= inner_nodes
    assert any(next(iter(c.data)) == "load_audio" for c in updates if c.event == "updates")
    tools = {e.tool for e in custom if isinstance(e, ToolFinished) and e.ok}
    assert len(tools) == 2  # Whisper base (internal) and Whisper tiny.en (external)
    decisions = [e for e in custom if isinstance(e, DecisionEvent)]
    assert decisions and sum(decisions[0].probs.values()) == pytest.approx(1.0, abs=1e-6)

    state = client.threads.get_state(thread["thread_id"])["values"]
    assert state["action"] == decisions[-1].action or state["action"] == "rewrite"
    assert word_errors(dev_references[UTT], state["answer"]).wer < 0.3
    assert {o["role"] for o in state["outputs"]} == {"internal", "external"}

    bad = client.threads.create()
    with pytest.raises(Exception, match=r"audio file not found: /no/such\.flac"):
        client.runs.wait(bad["thread_id"], "speech_hands", input={"audio": "/no/such.flac"})
