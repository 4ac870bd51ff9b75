"""The Postgres checkpointer (``--checkpointer postgresql://...``) against a real PostgreSQL server that the
tests start (tests/postgres.py): the same routing results and traces as SQLite for the same inputs, the
commands that read traces back (threads, trace, export-html), the tables created once when several
processes open a fresh database together, and clear errors (exit status 2, no password shown, before any
model loads) for bad and unreachable databases. The models are test doubles (the checkpointer is under
test); the graph, the savers and the commands are the real ones."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from doubles import CountingRewriter, FixedASR, ScriptedPolicy
from helpers import REPO, write_wav
from loopback import free_port
from postgres import PASSWORD

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.backends.composed import ComposedOmni
from speech_hands.checkpointing import open_checkpointer, redact, resolve_location, thread_ids
from speech_hands.errors import CheckpointerUnavailable, ConfigurationError

INTERNAL = ["the cat sat on the mat", "the cat sat on a mat"]
EXTERNAL = ["the cat sat on the hat", "a cat sat on the hat"]
#: (thread id, the scripted decisions round by round, the audio): every edge of the graph, long audio too
RUNS = [
    ("internal", [Action.INTERNAL], "short"),
    ("external", [Action.EXTERNAL], "short"),
    ("rewrite", [Action.REWRITE, Action.INTERNAL], "short"),
    ("long", [Action.EXTERNAL], "long"),
]
VARYING = {"elapsed_s", "started_at", "created_at", "checkpoint_id"}  # clocks and ids differ between any two runs


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)

    def tone(seconds: float) -> np.ndarray:
        t = np.arange(int(seconds * 16_000)) / 16_000
        return (0.2 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)

    return {"short": write_wav(folder / "short.wav", tone(1.0)), "long": write_wav(folder / "long.wav", tone(45.0))}


def make_agent(location: str, actions: list[Action], **config: Any) -> SpeechHands:
    omni = ComposedOmni(FixedASR("internal-asr", INTERNAL), ScriptedPolicy(actions), CountingRewriter())
    settings = AgentConfig(trace_db=location, detect_speech=False, min_words_per_speech_s=0.0, **config)
    return SpeechHands(omni, [FixedASR("external-asr", EXTERNAL)], config=settings)


def stable(value: Any) -> Any:
    """``value`` without clocks and checkpoint ids (a subgraph namespace keeps its node name, not its task
    id, which derives from the checkpoint id); the parallel writes of one step in a fixed order."""
    if isinstance(value, dict):
        return {
            k: v.split(":")[0] if k == "checkpoint_ns" and isinstance(v, str) else stable(v)
            for k, v in value.items()
            if k not in VARYING
        }
    if isinstance(value, list):
        items = [stable(v) for v in value]
        if items and all(isinstance(i, dict) and "node" in i and "update" in i for i in items):
            items.sort(key=lambda i: json.dumps(i, sort_keys=True))
        return items
    return value


def record(location: str, audio: dict[str, Path]) -> dict[str, tuple[Any, Any]]:
    """Every run of :data:`RUNS` through a fresh agent on ``location``: its result and its trace."""
    out = {}
    for thread, actions, clip in RUNS:
        with make_agent(location, actions) as agent:
            result = agent.invoke(audio[clip], thread_id=thread)
            out[thread] = (result.model_dump(mode="json"), agent.trace(thread).model_dump(mode="json"))
    return out


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "speech_hands.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_postgres_gives_the_same_results_and_traces_as_sqlite(tmp_path, postgres_url, audio):
    on_sqlite = record(str(tmp_path / "traces.sqlite"), audio)
    on_postgres = record(postgres_url, audio)
    assert on_postgres["rewrite"][0]["answer"] == "rewrite 1" and on_postgres["external"][0]["answer"] == EXTERNAL[0]
    assert len(on_postgres["long"][0]["segments"]) >= 2  # the segment subgraphs' checkpoints are read back too
    for thread, _, _ in RUNS:
        sqlite_result, sqlite_trace = on_sqlite[thread]
        postgres_result, postgres_trace = on_postgres[thread]
        assert stable(postgres_result) == stable(sqlite_result), thread
        assert stable(postgres_trace) == stable(sqlite_trace), thread
        assert postgres_trace["steps"] and postgres_result["thread_id"] == thread


def test_the_trace_commands_read_a_postgres_database(tmp_path, postgres_url, audio):
    """threads, trace --json and export-html over --checkpointer URL: the runs written above, newest first;
    the page names the database without its password."""
    for thread, actions, _ in RUNS[:3]:
        with make_agent(postgres_url, actions) as agent:
            agent.invoke(audio["short"], thread_id=thread)
    saver = open_checkpointer(postgres_url)
    try:
        assert thread_ids(saver) == ["rewrite", "external", "internal"]
        assert thread_ids(saver, 2) == ["rewrite", "external"]
    finally:
        saver.conn.close()

    listed = cli("threads", "--checkpointer", postgres_url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["rewrite", "external", "internal"]
    shown = cli("trace", "external", "--json", "--trace-db", postgres_url)  # the old spelling works too
    assert shown.returncode == 0, shown.stderr
    trace = json.loads(shown.stdout)
    route = [node for step in trace["steps"] for node in step["nodes"]]
    assert trace["result"]["answer"] == EXTERNAL[0] and route[-2:] == ["use_external", "finish"]
    page = tmp_path / "viewer.html"
    exported = cli("export-html", "--out", str(page), "--checkpointer", postgres_url)
    assert exported.returncode == 0, exported.stderr
    html = page.read_text(encoding="utf-8")
    assert "wrote" in exported.stdout and "3 runs" in exported.stdout
    assert redact(postgres_url) in html and PASSWORD not in html and PASSWORD not in exported.stdout


def test_async_runs_write_through_the_async_postgres_saver(postgres_url, audio, monkeypatch):
    agent = make_agent(postgres_url, [Action.EXTERNAL])

    def no_sync(*args, **kwargs):
        raise AssertionError("ainvoke must not run the sync graph")

    async def main():
        return await asyncio.gather(*(agent.ainvoke(audio["short"], thread_id=f"a{i}") for i in range(3)))

    with agent:
        monkeypatch.setattr(agent.graph, "invoke", no_sync)
        results = asyncio.run(main())
        assert [r.answer for r in results] == [EXTERNAL[0]] * 3
        assert sorted(agent.threads()) == ["a0", "a1", "a2"]


def test_workers_opening_a_fresh_database_together_create_the_tables_once(postgres, postgres_url):
    """Every worker calls setup() on start; the advisory lock keeps concurrent migrations from colliding."""
    savers, errors = [], []

    def open_one() -> None:
        try:
            savers.append(open_checkpointer(postgres_url))
        except Exception as exc:  # collected: the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for saver in savers:
        saver.conn.close()
    assert errors == [] and len(savers) == 4
    database = postgres_url.rsplit("/", 1)[1]
    versions = postgres.psql("SELECT count(*), count(DISTINCT v) FROM checkpoint_migrations", database)
    count, distinct = versions.split("|")
    assert count == distinct and int(count) > 0


def test_a_sqlite_perception_cache_stays_on_the_worker_with_postgres(tmp_path, postgres_url, audio, monkeypatch):
    monkeypatch.setenv("SPEECH_HANDS_HOME", str(tmp_path / "home"))
    for _ in range(2):
        with make_agent(postgres_url, [Action.INTERNAL], perception_cache="sqlite") as agent:
            agent.invoke(audio["short"])
            tools = agent.external
    assert (tmp_path / "home" / "perception-cache.sqlite").exists()
    assert tools[0].intervals == []  # the second agent read the first one's perception from the local cache


# ------------------------------------------------------------------------------------- bad locations


def test_locations_are_read_in_one_place(monkeypatch):
    monkeypatch.setenv("SPEECH_HANDS_TRACE_DB", "postgresql://u@db:5432/sh")  # keeps the password off `ps`
    assert resolve_location(None, Path) == "postgresql://u@db:5432/sh"
    assert AgentConfig().resolved_trace_db() == "postgresql://u@db:5432/sh"
    monkeypatch.delenv("SPEECH_HANDS_TRACE_DB")
    assert resolve_location(None, lambda: Path("/x/traces.sqlite")) == "/x/traces.sqlite"
    assert resolve_location("postgresql://u:p@h:5432/db", Path) == "postgresql://u:p@h:5432/db"
    assert resolve_location("postgres://h/db", Path) == "postgres://h/db"  # not a file named "postgres:/h/db"
    assert resolve_location(":memory:", Path) == ":memory:"
    assert resolve_location("~/x.sqlite", Path) == str(Path("~/x.sqlite").expanduser())
    with pytest.raises(ConfigurationError, match=r"unsupported checkpointer 'mysql://u:\*\*\*@h/db'") as refused:
        resolve_location("mysql://u:hunter2@h/db", Path)
    assert "hunter2" not in str(refused.value)
    assert redact("postgresql://u:hunter2@h:1/db?sslmode=require&password=x") == (
        "postgresql://u:***@h:1/db?sslmode=require&password=***"
    )
    assert redact("/data/traces.sqlite") == "/data/traces.sqlite"


def test_a_wrong_password_or_database_is_a_clear_error_without_the_password(postgres):
    wrong = postgres.url("postgres", password="not-the-password")
    with pytest.raises(CheckpointerUnavailable, match="password authentication failed") as failed:
        open_checkpointer(wrong)
    assert "not-the-password" not in str(failed.value) and "speech_hands:***@127.0.0.1" in str(failed.value)
    with pytest.raises(CheckpointerUnavailable, match='database "no_such_db" does not exist') as missing:
        open_checkpointer(postgres.url("no_such_db"))
    assert PASSWORD not in str(missing.value)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        # a bad internal model would fail as soon as it loads: the checkpointer error comes first
        (["transcribe", "{audio}", "--internal-model", "/no/such/model"], "cannot open the Postgres checkpointer"),
        (["serve", "--port", "{port}"], "cannot open the Postgres checkpointer"),
        (["threads"], "cannot open the Postgres checkpointer"),
    ],
)
def test_an_unreachable_database_ends_the_command_with_status_2_before_any_model_loads(command, message, audio):
    nobody = f"postgresql://speech_hands:{PASSWORD}@127.0.0.1:{free_port()}/speech_hands"
    args = [a.format(audio=audio["short"], port=free_port()) for a in command]
    done = cli(*args, "--checkpointer", nobody)
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and message in done.stderr and "Connection refused" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_serve_opens_the_configured_checkpointer_before_the_models(tmp_path, postgres):
    """A configuration's own trace_db (here an unreachable Postgres) is opened before its models load."""
    config = tmp_path / "agent.toml"
    nobody = f"postgresql://speech_hands:{PASSWORD}@127.0.0.1:{free_port()}/x"
    config.write_text(
        f'[agent]\ntrace_db = "{nobody}"\n[omni]\nkind = "embedded"\n'
        '[omni.predictor]\nkind = "faster-whisper"\nmodel = "/no/such/model"\n'
    )
    done = cli("serve", "--port", str(free_port()), "--config", str(config))
    assert done.returncode == 2 and "cannot open the Postgres checkpointer" in done.stderr, done.stderr
    assert PASSWORD not in done.stderr


def test_an_unsupported_scheme_is_refused_with_status_2():
    done = cli("threads", "--checkpointer", "redis://u:hunter2@127.0.0.1:6379/0")
    assert done.returncode == 2 and "unsupported checkpointer 'redis://u:***@127.0.0.1:6379/0'" in done.stderr
    assert "hunter2" not in done.stderr


def test_the_langgraph_server_graph_says_it_does_not_use_a_configured_postgres(tmp_path, monkeypatch, caplog):
    """Under `langgraph dev` / LangGraph Platform the server's own checkpointer keeps the runs: a
    configuration's trace_db is not opened, and the log says so (without the password)."""
    from speech_hands.agent import server

    config = tmp_path / "agent.toml"
    config.write_text(
        '[agent]\ntrace_db = "postgresql://u:hunter2@db.invalid/x"\n[omni]\nkind = "embedded"\n'
        '[omni.predictor]\nkind = "openai-transcription"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    monkeypatch.setenv("SPEECH_HANDS_SERVER_CONFIG", str(config))
    server.served_agent.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="speech_hands.agent.server"):
            agent = server.served_agent()
        assert agent.config.trace_db == ":memory:"
        assert "postgresql://u:***@db.invalid/x" in caplog.text and "hunter2" not in caplog.text
        agent.close()
    finally:
        server.served_agent.cache_clear()


def test_the_deploy_example_assembles_a_light_worker_on_postgres(postgres_url):
    """examples/deploy-worker.toml: every backend is remote (nothing to load in the worker), and the agent
    opens the shared database the deployment gives it."""
    from speech_hands.assembly import build_parts

    parts = build_parts(REPO / "examples" / "deploy-worker.toml")
    assert [getattr(b, "remote", False) for b in [parts.omni, *parts.external]] == [True, True, True]
    settings = parts.agent.model_copy(update={"trace_db": postgres_url})
    with SpeechHands(parts.omni, parts.external, config=settings) as agent:
        assert type(agent.checkpointer).__name__ == "PostgresSaver"
        assert [t.name for t in agent.tools] == ["speech-hands-omni", "whisper-server", "parakeet-server"]


def test_missing_postgres_binaries_fail_the_tests_instead_of_skipping_them(monkeypatch):
    import postgres as helper

    monkeypatch.setattr(helper.glob, "glob", lambda pattern: [])
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is not installed"):
        helper.postgres_bin()


def test_a_postgres_url_without_the_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'speech-hands\[postgres\]'") as missing:
        open_checkpointer("postgresql://u:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(missing.value)


def test_threads_of_an_agent_are_newest_first_on_every_saver(checkpointer_location, audio):
    with make_agent(checkpointer_location, [Action.INTERNAL]) as agent:
        for thread in ("first", "second", "third"):
            agent.invoke(audio["short"], thread_id=thread)
        assert agent.threads() == ["third", "second", "first"] and agent.threads(2) == ["third", "second"]


def test_a_database_restart_costs_no_run(postgres, postgres_url, audio):
    """The pool checks a connection before lending it, so the first run after PostgreSQL restarts (every
    pooled connection cut) reconnects instead of failing."""
    with make_agent(postgres_url, [Action.EXTERNAL]) as agent:
        assert agent.invoke(audio["short"], thread_id="before").answer == EXTERNAL[0]
        postgres.restart()
        assert agent.invoke(audio["short"], thread_id="after").answer == EXTERNAL[0]
        assert agent.threads() == ["after", "before"]
