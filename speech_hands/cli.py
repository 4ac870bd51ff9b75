"""The ``speech-hands`` command line. Each command is a thin call into the library."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from speech_hands.cli_options import CheckpointerOption
from speech_hands.errors import SpeechHandsError
from speech_hands.progress import progress_bar

app = typer.Typer(
    name="speech-hands",
    help="Speech-Hands: self-reflection routing between an omni model's own prediction and external tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)

SAMPLES_DIR = Path(__file__).parent / "data" / "samples"
DEMO_SAMPLE = SAMPLES_DIR / "2609-156975-0009.flac"


def _agent(
    *,
    trace_db: str | None,
    internal_model: str = "bundled:base",
    external_models: list[str] | None = None,
    replay: Path | None = None,
    policy: str = "learned",
    reflector: Path | None = None,
    **config: Any,
):
    from speech_hands.agent import SpeechHands
    from speech_hands.cli_options import open_for_command

    location, saver = open_for_command(trace_db)  # a bad or unreachable database fails before any model loads
    if replay is not None:
        return SpeechHands.from_replay(replay, trace_db=location, checkpointer=saver, **config)
    return SpeechHands.default(
        internal_model=internal_model,
        external_models=tuple(external_models or ["bundled:tiny.en"]),
        policy=policy,
        reflector=reflector,
        trace_db=location,
        checkpointer=saver,
        **config,
    )


def _probs(result) -> str:
    if result.reflection is None:
        return "-"
    return " ".join(f"{a.value[:3]}={p:.2f}" for a, p in result.reflection.probs.items())


def _candidates(result, limit: int = 2) -> str:
    lines = []
    for output in result.candidates:
        if output.error is not None:
            lines.append(f"[red]{output.tool}: failed ({output.error.type})[/red]")
            continue
        for hyp in output.hypotheses[:limit]:
            score = f" ({hyp.score:.2f})" if hyp.score is not None else ""
            lines.append(f"[dim]{escape(output.tool)}#{hyp.rank}[/dim] {escape(hyp.text)}{score}")
    return "\n".join(lines)


def _result_table(rows: list[tuple[str, Any]]) -> Table:
    table = Table(show_lines=True, title="Speech-Hands routing")
    for column in ("file", "answer", "action", "P(action)", "candidates", "thread"):
        table.add_column(column, overflow="fold")
    for name, result in rows:
        if isinstance(result, BaseException):
            table.add_row(escape(name), f"[red]{escape(str(result))}[/red]", "error", "-", "-", "-")
            continue
        action = result.action.token if result.action else f"skipped: {result.skipped_reason}"
        table.add_row(
            escape(name), escape(result.answer), escape(action), _probs(result), _candidates(result), result.thread_id
        )
    return table


@app.command()
def transcribe(
    files: list[Path] = typer.Argument(..., help="audio files (any format FFmpeg reads)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON result per line instead of a table"),
    output_format: str = typer.Option(
        "table",
        "--format",
        "-f",
        help="table; json (one result per line); txt, srt or vtt (the answer, or subtitles with one cue per segment)",
    ),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", "-o", help="write one FILE-STEM.txt/.json/.srt/.vtt per input here instead of stdout"
    ),
    n_best: int = typer.Option(5, help="hypotheses per ASR tool"),
    k_samples: int = typer.Option(1, "--k", help="reflection draws; >1 turns on majority voting"),
    max_rewrites: int = typer.Option(1, help="bound of the rewrite loop"),
    internal_model: str = typer.Option("bundled:base", help="faster-whisper model for the internal prediction"),
    external_model: list[str] | None = typer.Option(None, help="external ASR model(s); repeatable"),
    replay: Path | None = typer.Option(None, help="route over recorded outputs (JSONL) instead of models"),
    policy: str = typer.Option(
        "learned", help="reflection policy: learned (trained reflector) or confidence (hand-set baseline)"
    ),
    reflector: Path | None = typer.Option(
        None,
        help="reflector: full (the shipped one with the scoring pass; default: the shipped fast one), an artifact "
        "from `speech-hands train-reflector --out`, or a checkpoint folder from `speech-hands finetune` (the "
        "action-token Whisper)",
    ),
    trace_db: str | None = CheckpointerOption,
) -> None:
    """Transcribe FILES with the agent: perceive, reflect, route; prints answer, action and candidates.

    Exit status: 0 when every file was answered; 1 when some file got no answer (its audio could not be
    read, or every tool failed on it); 2 when nothing could run (a single bad file, a bad option or
    model), with one ``error:`` line.

    Long audio (over 30 s) is routed segment by segment; ``--format srt`` / ``vtt`` write one cue per
    segment, ``txt`` the stitched answer."""
    from speech_hands.formats import FORMATS

    fmt = "json" if as_json else output_format
    if fmt not in ("table", *FORMATS):
        raise SpeechHandsError(f"--format must be table, {', '.join(FORMATS)}; not {fmt!r}")
    if output_dir is not None and fmt == "table":
        raise SpeechHandsError("--output-dir writes documents: give --format txt, json, srt or vtt")
    if fmt in ("txt", "srt", "vtt") and len(files) > 1 and output_dir is None:
        raise SpeechHandsError(f"--format {fmt} with several files needs --output-dir DIR (one document per file)")
    unreadable = _unreadable_inputs(files) if replay is None else {}
    if len(unreadable) == len(files):
        raise SpeechHandsError("; ".join(unreadable.values()))
    agent = _agent(
        trace_db=trace_db,
        internal_model=internal_model,
        external_models=external_model,
        replay=replay,
        policy=policy,
        reflector=reflector,
        n_best=n_best,
        k_samples=k_samples,
        max_rewrites=max_rewrites,
    )
    if replay is None:
        agent.load()
    rows: list[tuple[str, Any]] = [(str(f), None) for f in files]
    with progress_bar(err_console, disable=len(files) < 2 or not err_console.is_terminal, transient=True) as progress:
        task = progress.add_task("routing", total=len(files))

        def done(i: int, outcome: Any) -> None:
            rows[i] = (str(files[i]), outcome)
            progress.advance(task)
            if output_dir is not None:
                _write_document(output_dir, files[i], outcome, fmt)
            elif fmt == "json":
                print(_json_line(files[i], outcome), flush=True)

        agent.batch(
            files,
            utterance_ids=[f.stem for f in files] if replay else None,
            return_exceptions=True,
            on_result=done,
        )
    agent.close()
    if len(files) == 1 and isinstance(rows[0][1], SpeechHandsError):
        raise rows[0][1]  # one file that cannot be read: the one-line error, status 2
    if fmt == "table":
        console.print(_result_table(rows))
        console.print("[dim]Inspect a decision: speech-hands trace THREAD[/dim]")
    elif fmt != "json" and output_dir is None and not isinstance(rows[0][1], BaseException):
        from speech_hands.formats import render

        sys.stdout.write(render(rows[0][1], fmt))
    unanswered = [name for name, outcome in rows if _unanswered(outcome)]
    if unanswered:
        err_console.print(f"[red]{len(unanswered)} of {len(rows)} file(s) failed (no answer)[/red]")
        raise typer.Exit(code=1)


def _write_document(folder: Path, path: Path, outcome: Any, fmt: str) -> None:
    """``folder/<stem>.<fmt>`` for an answered file; a failed one is reported on stderr."""
    from speech_hands.formats import SUFFIXES, render

    if isinstance(outcome, BaseException):
        err_console.print(f"[red]{escape(str(path))}: {escape(f'{type(outcome).__name__}: {outcome}')}[/red]")
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{path.stem}{SUFFIXES[fmt]}").write_text(render(outcome, fmt), encoding="utf-8")


def _unreadable_inputs(files: list[Path]) -> dict[Path, str]:
    """The files that cannot be audio at all (missing, a folder, empty), found before any model loads."""
    from speech_hands.audio import check_audio_file

    problems: dict[Path, str] = {}
    for path in files:
        try:
            check_audio_file(path)
        except SpeechHandsError as exc:
            problems[path] = str(exc)
    return problems


def _unanswered(outcome: Any) -> bool:
    """A failed file, or a run whose tools all failed. Silence and non-speech are answered (with
    nothing): their tools were never called."""
    if isinstance(outcome, BaseException):
        return True
    return outcome.action is None and bool(outcome.candidates)


def _json_line(path: Path, outcome: Any) -> str:
    if isinstance(outcome, BaseException):
        return json.dumps({"file": str(path), "error": f"{type(outcome).__name__}: {outcome}"})
    data = outcome.model_dump(mode="json")
    data["file"] = str(path)
    return json.dumps(data)


QUESTION_MARK = "::"


def _turn_inputs(files: list[str], question: str | None) -> list[tuple[Path, str | None]]:
    """``FILE`` or ``FILE::QUESTION`` per turn; ``--question`` asks every file that has no question of its own."""
    turns = []
    for spec in files:
        path, mark, own = spec.partition(QUESTION_MARK)
        if mark and not own.strip():
            raise SpeechHandsError(f"{spec!r}: nothing after {QUESTION_MARK!r}; write FILE::QUESTION, or FILE alone")
        turns.append((Path(path), own.strip() if mark else question))
    return turns


def _load_chat_model(spec: str):
    """The chat model ``--chat-model`` names, loaded by the local-LLM loader (extra ``llm``)."""
    try:
        from speech_hands.backends.local_llm import load_chat_model
    except ImportError as exc:
        raise SpeechHandsError(
            f"--chat-model needs the local chat-model loader (speech_hands.backends.local_llm, in the extra "
            f"named llm of speech-hands), which cannot be imported here ({exc})"
        ) from exc
    try:
        return load_chat_model(spec)
    except SpeechHandsError:
        raise
    except Exception as exc:  # the loader's own failure (a missing model folder, a broken file): one line
        raise SpeechHandsError(f"cannot load the chat model {spec!r} ({type(exc).__name__}: {exc})") from exc


def _turn_line(path: Path, turn: Any) -> str:
    if isinstance(turn, BaseException):
        return json.dumps({"file": str(path), "error": f"{type(turn).__name__}: {turn}"})
    data = turn.model_dump(mode="json", include={"index", "thread_id", "question", "transcript", "action"})
    data |= turn.model_dump(mode="json", include={"probabilities", "cues", "reply", "skipped_reason", "notes"})
    return json.dumps({"turn": data.pop("index"), "file": str(path), **data})


def _print_turn(path: Path, turn: Any) -> None:
    if isinstance(turn, BaseException):
        console.print(f"[red]{escape(str(path))}: {escape(f'{type(turn).__name__}: {turn}')}[/red]")
        return
    action = turn.action.token if turn.action else f"skipped: {turn.skipped_reason}"
    p = f" P={turn.probabilities[turn.action.value]:.2f}" if turn.action and turn.probabilities else ""
    asked = f"[bold]Q:[/bold] {escape(turn.question)}\n  " if turn.question else ""
    console.print(f"[bold]turn {turn.index}[/bold] [dim]{escape(str(path))}[/dim] {escape(action)}{p}")
    console.print(f"  {asked}{escape(turn.transcript) or '[dim](nothing)[/dim]'}")
    if turn.cues is not None:
        console.print(f"  [dim]cues: {escape(turn.cues.as_text())}[/dim]")
    if turn.reply is not None:
        console.print(f"  [bold]assistant:[/bold] {escape(turn.reply)}")


def _turn_unanswered(turn: Any) -> bool:
    """A turn whose audio could not be read, or whose tools all failed; silence and non-speech are answered."""
    if isinstance(turn, BaseException):
        return True
    return turn.action is None and not (turn.skipped_reason or "").startswith(("silent audio", "no speech"))


@app.command()
def chat(
    files: list[str] = typer.Argument(
        ..., help="one audio file per user turn, in order; FILE::QUESTION makes that turn an audio-QA turn"
    ),
    thread_id: str | None = typer.Option(
        None, "--thread-id", help="continue this conversation (default: a new one, its id printed)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON line per turn instead of text"),
    question: str | None = typer.Option(
        None, "--question", help="ask this about every file that has no FILE::QUESTION of its own (audio-QA turns)"
    ),
    chat_model: str | None = typer.Option(
        None,
        "--chat-model",
        help="the chat model that replies (bundled:qwen2.5-0.5b or a local model folder; extra `llm`); "
        "default: none, a multi-turn transcription / audio-QA session",
    ),
    asr_context: bool | None = typer.Option(
        None,
        "--asr-context/--no-asr-context",
        help="earlier turns' transcripts as the speech recognisers' prompt (default: as benchmarks/asr_prompt.py measured)",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="agent configuration file (default: the embedded one; audio QA needs a QA model)"
    ),
    trace_db: str | None = CheckpointerOption,
) -> None:
    """Play a conversation from audio files, one user turn each: every turn is routed (traced like any
    run: speech-hands trace THREAD), its cues measured, and the chat model replies with the whole
    conversation in view. The conversation is kept in the trace database under its thread id.

    Exit status: 0 when every turn was answered; 1 when some turn got no answer (its audio could not be
    read, or every tool failed on it); 2 when nothing could run (every file unreadable, a bad option,
    model or chat model), with one ``error:`` line."""
    from speech_hands.agent.assistant import ASR_CONTEXT_DEFAULT, VoiceAssistant

    turns = _turn_inputs(files, question)
    unreadable = _unreadable_inputs([path for path, _ in turns])
    if len(unreadable) == len(turns):
        raise SpeechHandsError("; ".join(dict.fromkeys(unreadable.values())))
    model = _load_chat_model(chat_model) if chat_model is not None else None
    if config is None:
        agent = _agent(trace_db=trace_db)
    else:
        from speech_hands.agent import SpeechHands
        from speech_hands.assembly import build_parts
        from speech_hands.cli_options import open_for_command

        parts = build_parts(config)
        location, saver = open_for_command(trace_db or parts.agent.trace_db)  # before any model loads
        settings = parts.agent.model_copy(update={"trace_db": location})
        agent = SpeechHands(parts.omni, parts.external, config=settings, checkpointer=saver)
    if agent.omni.kind == "asr" and any(asked for _, asked in turns):
        agent.close()
        raise SpeechHandsError(
            f"the agent's model {agent.omni.name!r} does speech recognition only and cannot answer a question; "
            "give --config with an audio-QA model for FILE::QUESTION / --question turns"
        )
    agent.load()
    assistant = VoiceAssistant(
        agent, model, asr_context=ASR_CONTEXT_DEFAULT if asr_context is None else asr_context, owns_agent=True
    )
    thread = thread_id or assistant.new_thread()
    earlier = len(assistant.conversation(thread)) if thread_id else 0
    if not as_json:
        what = f"continuing thread {thread} after {earlier} turn(s)" if earlier else f"new thread {thread}"
        if thread_id and not earlier:
            what += " (no earlier turns of it in this trace database)"
        err_console.print(f"[dim]{what}[/dim]")
    outcomes: list[Any] = []
    try:
        with progress_bar(err_console, disable=len(turns) < 2 or not err_console.is_terminal, transient=True) as bar:
            task = bar.add_task("turns", total=len(turns))
            for path, asked in turns:
                if path in unreadable:
                    outcome: Any = SpeechHandsError(unreadable[path])
                else:
                    try:
                        outcome = assistant.turn(path, asked, thread_id=thread)
                    except SpeechHandsError as exc:
                        if len(turns) == 1:
                            raise
                        outcome = exc
                outcomes.append(outcome)
                bar.advance(task)
                if as_json:
                    print(_turn_line(path, outcome), flush=True)
                else:
                    _print_turn(path, outcome)
    finally:
        assistant.close()
    if not as_json:
        err_console.print(
            f"[dim]thread {thread}: continue with --thread-id {thread}; speech-hands trace {thread}[/dim]"
        )
    failed = [o for o in outcomes if _turn_unanswered(o)]
    if failed:
        err_console.print(f"[red]{len(failed)} of {len(outcomes)} turn(s) got no answer[/red]")
        raise typer.Exit(code=1)


def _trace_graph(trace_db: str | None):
    """The routing graph's shape over the checkpointer (no model): enough to read every run back."""
    from speech_hands.checkpointing import MEMORY, is_postgres, open_checkpointer
    from speech_hands.cli_options import resolve
    from speech_hands.graphs.routing import graph_shape

    db = resolve(trace_db)
    if db != MEMORY and not is_postgres(db) and not Path(db).exists():
        raise SpeechHandsError(
            f"no trace database at {db}; run `speech-hands transcribe` first or pass --checkpointer / --trace-db"
        )
    return graph_shape().compile(checkpointer=open_checkpointer(db)), db


ReportOption = typer.Option(
    None,
    "--report",
    help="`eval run` output folder(s) for references and gold actions (default: the trace db's folder)",
)
ActionFilter = typer.Option(
    None, "--action", help="only runs whose final action is this (internal, external, rewrite, skipped)"
)
DatasetFilter = typer.Option(None, "--dataset", help="only runs of this dataset (needs a report)")
WrongFilter = typer.Option(False, "--wrong", help="only runs whose answer is not the reference (needs a report)")
MismatchFilter = typer.Option(False, "--mismatch", help="only runs whose decision differs from the gold action")
LowConfidenceFilter = typer.Option(None, "--low-confidence", help="only runs with P(decided action) below this")


def _reports(db: str, report: list[Path] | None) -> list[Path]:
    """The eval report folders to join: the ones given, else the trace db's folder when it is one."""
    from speech_hands.checkpointing import is_postgres

    if report:
        return list(report)
    if is_postgres(db):
        return []
    folder = Path(db).parent
    return [folder] if db != ":memory:" and (folder / "results.jsonl").exists() else []


def _run_filter(action, dataset, wrong, mismatch, low_confidence, reports: list[Path]):
    from speech_hands.tracing.runs import RunFilter

    if action is not None and action not in ("internal", "external", "rewrite", "skipped"):
        raise SpeechHandsError(f"--action must be internal, external, rewrite or skipped, not {action!r}")
    if (dataset or wrong or mismatch) and not reports:
        raise SpeechHandsError(
            "--dataset, --wrong and --mismatch need references: pass --report DIR (an `eval run` output folder)"
        )
    return RunFilter(action=action, dataset=dataset, wrong=wrong, mismatch=mismatch, low_confidence=low_confidence)


@app.command()
def trace(
    thread_id: str | None = typer.Argument(
        None, help="thread id printed by transcribe / demo (or pick runs by filters)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the whole trace as JSON"),
    diff: bool = typer.Option(
        False, "--diff", help="the candidates' word diff against the reference (--report) or the internal prediction"
    ),
    report: list[Path] | None = ReportOption,
    action: str | None = ActionFilter,
    dataset: str | None = DatasetFilter,
    wrong: bool = WrongFilter,
    mismatch: bool = MismatchFilter,
    low_confidence: float | None = LowConfidenceFilter,
    limit: int = typer.Option(5, help="with filters: at most this many runs, newest first"),
    trace_db: str | None = CheckpointerOption,
) -> None:
    """Show the decision history of one run (or of the runs the filters pick), read back from the
    checkpointer (no model is run)."""
    from speech_hands.tracing.render import render_diff, render_trace
    from speech_hands.tracing.runs import load_catalog, load_run
    from speech_hands.tracing.trace import read_trace

    graph, db = _trace_graph(trace_db)
    reports = _reports(db, report)
    run_filter = _run_filter(action, dataset, wrong, mismatch, low_confidence, reports)
    if thread_id is not None and run_filter.active:
        raise SpeechHandsError("give a THREAD id or filters, not both")
    if thread_id is None and not run_filter.active:
        raise SpeechHandsError("give a THREAD id (see `speech-hands threads`) or a filter such as --action rewrite")
    if thread_id is not None:
        threads_ = [thread_id]
    else:
        catalog = load_catalog(graph, trace_db=db, reports=reports)
        threads_ = [r.thread_id for r in catalog.select(run_filter)][:limit]
        if not threads_:
            err_console.print("[yellow]no run matches the filters[/yellow]")
            return
    traces = [read_trace(graph, t) for t in threads_]
    if as_json:
        if thread_id is not None:
            print(traces[0].model_dump_json(indent=2))
        else:
            print(json.dumps([t.model_dump(mode="json") for t in traces], indent=2))
        return
    for decision_trace in traces:
        render_trace(decision_trace, console)
        if diff:
            render_diff(load_run(graph, decision_trace.thread_id, reports=reports), console)


@app.command()
def threads(
    limit: int = typer.Option(20, help="how many"),
    report: list[Path] | None = ReportOption,
    action: str | None = ActionFilter,
    dataset: str | None = DatasetFilter,
    wrong: bool = WrongFilter,
    mismatch: bool = MismatchFilter,
    low_confidence: float | None = LowConfidenceFilter,
    trace_db: str | None = CheckpointerOption,
) -> None:
    """List the most recent thread ids in the trace database; with filters (or --report), a table of
    the matching runs: item, action, P(decision), gold action, WER."""
    from speech_hands.tracing.runs import list_threads, load_catalog

    graph, db = _trace_graph(trace_db)
    reports = _reports(db, report)
    run_filter = _run_filter(action, dataset, wrong, mismatch, low_confidence, reports)
    if not run_filter.active and not report:
        for thread in list_threads(graph, limit):
            console.print(thread)
        return
    from speech_hands.tracing.render import runs_table

    catalog = load_catalog(graph, trace_db=db, reports=reports)
    runs = catalog.select(run_filter)
    console.print(runs_table(runs[:limit], f"{len(runs)} of {len(catalog.runs)} runs match"))


@app.command()
def ui(
    report: list[Path] | None = ReportOption,
    host: str = typer.Option("127.0.0.1", help="address to bind (default: this machine only)"),
    port: int = typer.Option(8765, help="port (0: any free port)"),
    limit: int | None = typer.Option(None, help="only the most recent N runs"),
    trace_db: str | None = CheckpointerOption,
) -> None:
    """Serve the trace viewer on localhost: every run with filters, candidates and word diffs, the
    action probabilities, votes, rewrites, the route through the graph and per-node latency, and the
    audio (only files the traces reference). Reload the page for new runs; Ctrl-C stops it."""
    from speech_hands.tracing.runs import load_catalog
    from speech_hands.tracing.server import ViewerServer

    graph, db = _trace_graph(trace_db)
    reports = _reports(db, report)
    load_catalog(graph, trace_db=db, reports=reports, limit=limit)  # fail here, not on the first request
    try:
        server = ViewerServer(
            lambda: load_catalog(graph, trace_db=db, reports=reports, limit=limit), host=host, port=port
        )
    except OSError as exc:
        raise SpeechHandsError(
            f"cannot listen on {host}:{port} ({exc}); pick another --port (0: any free one)"
        ) from exc
    console.print(f"trace viewer: [bold]{server.url}[/bold]  (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.stop()


@app.command("export-html")
def export_html(
    out: Path = typer.Option(..., "--out", help="the HTML file to write"),
    report: list[Path] | None = ReportOption,
    limit: int | None = typer.Option(None, help="only the most recent N runs"),
    trace_db: str | None = CheckpointerOption,
) -> None:
    """Write the trace viewer as one self-contained HTML page (no network access; audio is linked by
    file:// path, not copied)."""
    from speech_hands.tracing.runs import load_catalog
    from speech_hands.tracing.viewer import write_page

    graph, db = _trace_graph(trace_db)
    catalog = load_catalog(graph, trace_db=db, reports=_reports(db, report), limit=limit)
    write_page(catalog, out)
    console.print(f"wrote {out} ({len(catalog.runs)} runs)")


@app.command()
def demo(
    trace_db: str | None = CheckpointerOption,
    k_samples: int = typer.Option(1, "--k", help="reflection draws; >1 turns on majority voting"),
) -> None:
    """Run the agent on the bundled LibriSpeech sample with the embedded offline default models."""
    from speech_hands.tracing.render import render_result

    reference = (SAMPLES_DIR / "REFERENCE.txt").read_text(encoding="utf-8").split("\t", 1)[1].strip()
    console.print(f"[bold]Sample[/bold] {DEMO_SAMPLE.name} (LibriSpeech test-other, CC BY 4.0)")
    with console.status("loading Whisper base (internal) and tiny.en (external) and routing..."):
        agent = _agent(trace_db=trace_db, k_samples=k_samples)
        result = agent.invoke(DEMO_SAMPLE)
    render_result(result, console, reference=reference)
    agent.close()
    console.print(
        "[dim]One utterance; `speech-hands eval run librispeech-dev` measures all 60 dev utterances "
        "(WER per system, oracle, routing F1).[/dim]"
    )


@app.command()
def graph() -> None:
    """Print the routing state machine as Mermaid (no model is loaded)."""
    from speech_hands.graphs.routing import graph_shape

    print(graph_shape().compile().get_graph().draw_mermaid())


def _register_subcommands() -> None:
    """``eval``, ``labels`` and ``train-reflector`` are core modules: a failing import is a bug to
    see at once, never a silently missing command."""
    from speech_hands.evals.cli import register as register_evals
    from speech_hands.service.cli import register as register_serve
    from speech_hands.training.cli import register as register_training

    register_evals(app)
    register_training(app)
    register_serve(app)


_register_subcommands()


def main() -> None:
    """Console entry point: user-actionable errors print one clear line, not a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code: int | str | None = 0
    try:
        app()
    except SpeechHandsError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")  # "[llm]" in a message is text, not markup
        code = 2
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, int) or code is None:
        # a tool call that timed out may still run native code: wait for it, keeping the exit code
        from speech_hands.graphs.calls import exit_process

        exit_process(code or 0)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
