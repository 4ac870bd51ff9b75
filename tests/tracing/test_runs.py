"""The viewer's data: word diffs agree with the reported error counts, runs read back from a real eval
run's traces carry what the report knows, and the filters select by each condition."""

from __future__ import annotations

import pytest

from speech_hands.agent.speech_hands import open_checkpointer
from speech_hands.graphs.routing import graph_shape
from speech_hands.metrics.wer import normalize_for, word_errors
from speech_hands.tracing.diff import word_diff
from speech_hands.tracing.runs import RunFilter, load_catalog


@pytest.mark.parametrize(
    ("reference", "hypothesis", "ops"),
    [
        ("a b c d", "a x c d e", ["equal", "substitute", "equal", "insert"]),
        ("there's iron they say", "their zyon they say", ["substitute", "delete", "equal"]),
        ("", "a b", ["insert"]),
        ("a b", "", ["delete"]),
        ("", "", []),
    ],
)
def test_word_diff_is_jiwers_alignment_on_normalised_text(reference, hypothesis, ops):
    diff = word_diff(reference, hypothesis)
    assert [op.op for op in diff.ops] == ops
    counts = word_errors(reference, hypothesis)
    assert diff.errors == counts.errors and diff.reference_words == counts.reference_length
    # the chunks put back together are the two normalised word sequences
    assert [w for op in diff.ops for w in op.ref] == normalize_for(reference).split()
    assert [w for op in diff.ops for w in op.hyp] == normalize_for(hypothesis).split()


def test_catalog_joins_traces_with_the_report(eval_run):
    graph = graph_shape().compile(checkpointer=open_checkpointer(str(eval_run.db)))
    catalog = load_catalog(graph, trace_db=str(eval_run.db), reports=[eval_run.folder])
    assert [r.thread_id for r in catalog.runs] == [r.thread_id for r in reversed(eval_run.results)]
    by_thread = eval_run.by_thread()
    for run in catalog.runs:
        item = by_thread[run.thread_id]
        assert run.item_id == item.id and run.action == item.action.value and run.reference == item.reference
        assert run.confidence == pytest.approx(item.probs[item.first_action])
        assert run.wrong == (word_errors(item.reference, item.prediction).errors > 0)
        assert run.answer_diff.errors == word_errors(item.reference, item.prediction).errors
        for cand in run.candidates:
            for hyp in cand.hypotheses:
                assert hyp.diff.errors == word_errors(item.reference, hyp.text).errors
        assert run.node_seconds["perceive"] > 0 and run.steps[0].tasks[0].node == "prepare"
        taken = {(s, t) for s, t, _ in run.path_edges}
        assert {("__start__", "prepare"), ("prepare", "perceive"), ("finish", "__end__")} <= taken
        assert (("rewrite", "reflect") in taken) == (item.rewrite_count > 0)
        assert dict(((s, t), n) for s, t, n in run.path_edges)[("reflect", "vote")] == 3 * (item.rewrite_count + 1)
    failed = [r for r in catalog.runs if r.failed_tools]
    assert [r.failed_tools for r in failed] == [["b2.b1+nnlm"]]
    assert any("b2.b1+nnlm failed" in note for note in failed[0].notes)
    # without the report: no reference, so candidates are diffed against the internal prediction
    bare = load_catalog(graph, trace_db=str(eval_run.db))
    assert all(r.reference is None and r.wrong is None and r.diff_against == "internal" for r in bare.runs)
    assert all(r.candidates[0].hypotheses[0].diff.errors == 0 for r in bare.runs)  # internal vs itself


def test_run_filter_conditions(eval_run):
    graph = graph_shape().compile(checkpointer=open_checkpointer(str(eval_run.db)))
    catalog = load_catalog(graph, trace_db=str(eval_run.db), reports=[eval_run.folder])
    runs = catalog.runs
    assert not RunFilter().active and catalog.select(RunFilter()) == runs
    assert {r.action for r in catalog.select(RunFilter(action="rewrite"))} == {"rewrite"}
    assert catalog.select(RunFilter(action="skipped")) == []
    low = catalog.select(RunFilter(low_confidence=0.6))
    assert low and all(r.confidence < 0.6 for r in low) and len(low) < len(runs)
    both = catalog.select(RunFilter(low_confidence=0.6, mismatch=True))
    assert {r.thread_id for r in both} == {r.thread_id for r in low if r.decision != r.gold_action}
    assert all(r.dataset == "librispeech-b" for r in catalog.select(RunFilter(dataset="librispeech-b")))
    assert all(r.wrong for r in catalog.select(RunFilter(wrong=True)))
