"""WER, gold-action labels and multiple-choice matching against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from speech_hands.metrics.labels import LabelRule, asr_gold_action, qa_gold_action
from speech_hands.metrics.qa import accuracy_by_category, is_correct, resolve_choice
from speech_hands.metrics.wer import corpus_wer, word_errors
from speech_hands.types import Action

# ------------------------------------------------------------------------------------------ WER


def test_one_deletion():
    c = word_errors("the cat sat on the mat", "the cat sat on mat")
    assert (c.hits, c.substitutions, c.deletions, c.insertions) == (5, 0, 1, 0)
    assert c.wer == pytest.approx(1 / 6)


def test_reference_comes_first():
    # swapped arguments would divide by the hypothesis length (1 word) and give 3.0
    assert word_errors("a b c d", "a").wer == pytest.approx(0.75)


def test_all_deletions_and_empty_hypothesis():
    c = word_errors("red green blue", "")
    assert c.deletions == 3 and c.wer == 1.0


def test_empty_reference_counts_insertions():
    c = word_errors("", "hello world")
    assert c.insertions == 2 and c.reference_length == 0 and c.wer == 2.0
    assert word_errors("", "").wer == 0.0
    total = corpus_wer(["a b", ""], ["a b", "x"])
    assert total.errors == 1 and total.reference_length == 2 and total.wer == 0.5


def test_corpus_wer_is_not_the_mean_of_utterance_wers():
    total = corpus_wer(["a", "a b c d"], ["b", "a b c d"])
    assert total.wer == pytest.approx(1 / 5)  # the mean of utterance WERs would be 0.5
    assert total.utterances == 2


def test_english_normaliser_numbers_contractions_spellings():
    ref = "I won't pay twenty five dollars, Mr. Smith; it's colour."
    hyp = "i will not pay $25 mister smith it is color"
    assert word_errors(ref, hyp, normalizer="english").errors == 0
    assert word_errors(ref, hyp, normalizer="basic").errors > 0


def test_basic_normaliser_drops_bracketed_spans_like_the_reference_scripts():
    assert word_errors("hello (noise) <unk> world", "Hello, world!", normalizer="basic").errors == 0


def test_cer_for_text_without_spaces():
    c = word_errors("你好世界", "你好世", normalizer="basic", unit="char")
    assert c.deletions == 1 and c.wer == pytest.approx(0.25)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        corpus_wer(["a"], [])


# ------------------------------------------------------------------------------------------ labels


def test_internal_when_internal_is_exactly_right_even_if_others_are_too():
    label = asr_gold_action("the cat sat", "The cat sat.", {"asr": ["the cat sat"]}, rewrite="the cat sat")
    assert label.action is Action.INTERNAL and label.errors["internal"] == 0


def test_tie_between_internal_and_external_goes_to_internal():
    label = asr_gold_action("the cat sat on the mat", "the bat sat on the mat", {"asr": ["the cat sat on the hat"]})
    assert label.errors["internal"] == label.errors["external"] == 1
    assert label.action is Action.INTERNAL


def test_external_when_some_nbest_entry_is_better():
    label = asr_gold_action("the cat sat", "the bat sat", {"asr": ["a cat", "the cat sat"]})
    assert label.action is Action.EXTERNAL
    assert (label.external_tool, label.external_rank) == ("asr", 1)
    # with top-1 only, the external candidate is worse and internal wins
    top1 = asr_gold_action(
        "the cat sat", "the bat sat", {"asr": ["a cat", "the cat sat"]}, rule=LabelRule(oracle_external=False)
    )
    assert top1.action is Action.INTERNAL


def test_tie_between_external_and_rewrite_goes_to_external():
    label = asr_gold_action("a b c d", "x y c d", {"asr": ["a b c x"]}, rewrite="a b x d")
    assert label.errors == {"internal": 2, "external": 1, "rewrite": 1}
    assert label.action is Action.EXTERNAL


def test_rewrite_when_both_are_worse_than_the_rewrite():
    label = asr_gold_action("a b c d", "x y c d", {"asr": ["a z z d"]}, rewrite="a b c d")
    assert label.action is Action.REWRITE


def test_without_rewrite_candidate_rewrite_is_never_the_label():
    label = asr_gold_action("a b c d", "x y z w", {"asr": ["q r s t"]})
    assert label.action is Action.INTERNAL and math.isinf(label.errors["rewrite"])


def test_tolerance_lets_internal_win_near_ties():
    rule = LabelRule(tolerance=1)
    assert asr_gold_action("a b c", "a x c", {"asr": ["a b c"]}, rule=rule).action is Action.INTERNAL


def test_threshold_rule():
    rule = LabelRule(rule="threshold", threshold=0.25)
    assert asr_gold_action("a b c d", "a b c x", {"asr": ["a b c d"]}, rule=rule).action is Action.INTERNAL
    assert asr_gold_action("a b c d", "a b x x", {"asr": ["a b c x"]}, rule=rule).action is Action.EXTERNAL
    assert asr_gold_action("a b c d", "a x x x", {"asr": ["x x c d"]}, rule=rule).action is Action.REWRITE


CHOICES = ["A. Near the end", "B. In the middle", "C. At the beginning"]


def test_qa_labels_follow_the_paper_order():
    assert (
        qa_gold_action("B. In the middle", CHOICES, "b in the middle", {"af3": ["C. At the beginning"]}).action
        is Action.INTERNAL
    )
    assert (
        qa_gold_action("C. At the beginning", CHOICES, "b in the middle", {"af3": ["C. At the beginning"]}).action
        is Action.EXTERNAL
    )
    assert qa_gold_action("A. Near the end", CHOICES, "B", {"af3": ["C"]}).action is Action.REWRITE
    samples = {"af3": ["C", "A"]}
    assert qa_gold_action("A. Near the end", CHOICES, "B", samples).action is Action.REWRITE
    any_sample = LabelRule(any_external_sample=True)
    assert qa_gold_action("A. Near the end", CHOICES, "B", samples, any_sample).action is Action.EXTERNAL


# ------------------------------------------------------------------------------------------ QA


@pytest.mark.parametrize(
    ("prediction", "index"),
    [
        ("b in the middle", 1),
        ("B. In the middle", 1),
        ("in the middle", 1),
        ("B", 1),
        ("(C)", 2),
        ("Answer: A", 0),
        ("The answer is B.", 1),
        ("C) at the beginning, since the shower starts first", 2),
        ("it is at the beginning of the clip", None),  # only contains mode reads this
        ("somewhere", None),
        ("", None),
    ],
)
def test_resolve_choice_exact(prediction, index):
    assert resolve_choice(prediction, CHOICES) == index


def test_contains_mode_and_ambiguity():
    assert resolve_choice("it is at the beginning of the clip", CHOICES, "contains") == 2
    assert resolve_choice("near the end or in the middle", CHOICES, "contains") is None  # two options named


def test_is_correct_and_gold_must_be_an_option():
    assert is_correct("b in the middle", "B. In the middle", CHOICES)
    assert not is_correct("C", "B. In the middle", CHOICES)
    with pytest.raises(ValueError, match="not one of the options"):
        is_correct("B", "D. Never", CHOICES)
    assert is_correct("An earthquake!", "an earthquake") and not is_correct("a quake", "an earthquake")


def test_accuracy_by_category_counts_unparseable():
    rows = accuracy_by_category([("bio", True, True), ("bio", False, False), ("scape", True, True)])
    by = {r.category: r for r in rows}
    assert by["bio"].accuracy == 0.5 and by["bio"].unparseable == 1
    assert by["all"].correct == 2 and by["all"].total == 3 and rows[-1].category == "all"


def test_labels_reproduce_the_papers_recorded_qa_cases(shared_data):
    import json

    cases = json.loads((shared_data / "speech_hands_demo_cases.json").read_text())["audio_qa"]
    for case in cases:
        label = qa_gold_action(
            case["gold_answer"], case["choices"], case["internal_prediction"], {"af3": [case["external_prediction"]]}
        )
        assert label.action.value == case["gold_action"], case["id"]


def test_labels_reproduce_the_papers_recorded_asr_cases(shared_data):
    """Without the paper's rewrite outputs, the threshold rule with the reference scripts' basic
    normaliser reproduces all three recorded ASR decisions (internal, external, rewrite)."""
    import json

    cases = json.loads((shared_data / "speech_hands_demo_cases.json").read_text())["asr"]
    rule = LabelRule(rule="threshold", normalizer="basic")
    got = [
        asr_gold_action(c["reference"], c["internal_prediction"], {"p": c["external_nbest"]}, rule=rule).action.value
        for c in cases
    ]
    assert got == [c["gold_action"] for c in cases] == ["internal", "external", "rewrite"]


# ------------------------------------------------------------------ paired bootstrap


def test_bootstrap_of_a_system_better_on_every_item():
    from speech_hands.metrics.significance import paired_bootstrap

    better = paired_bootstrap([1, 0, 2, 1, 0, 1] * 5, [2, 1, 3, 2, 1, 2] * 5, resamples=500, seed=1)
    assert better.estimate == pytest.approx(1 - 5 / 11)
    assert 0 < better.low <= better.estimate <= better.high < 1
    assert better.p_not_better == 0.0 and better.unit == "item" and better.clusters == 30
    again = paired_bootstrap([1, 0, 2, 1, 0, 1] * 5, [2, 1, 3, 2, 1, 2] * 5, resamples=500, seed=1)
    assert again == better  # seeded: the same resamples


def test_bootstrap_of_equal_systems_and_of_a_single_item():
    from speech_hands.metrics.significance import paired_bootstrap

    same = paired_bootstrap([3, 1, 0, 2], [3, 1, 0, 2], resamples=200)
    assert same.estimate == 0.0 and same.low == same.high == 0.0
    assert same.p_not_better == 1.0  # never better
    one = paired_bootstrap([1], [4], resamples=50)  # every resample is that item
    assert one.low == one.high == one.estimate == pytest.approx(0.75)


def test_bootstrap_over_speakers_resamples_whole_speakers():
    from speech_hands.metrics.significance import paired_bootstrap, reduction_intervals

    # speaker s1 gains a lot, s2 loses a little: resampling speakers is far less sure than items
    agent = [0] * 20 + [2] * 20
    single = [2] * 20 + [1] * 20
    by_item = paired_bootstrap(agent, single, resamples=1000)
    by_speaker = paired_bootstrap(agent, single, groups=["s1"] * 20 + ["s2"] * 20, resamples=1000)
    assert by_speaker.unit == "speaker" and by_speaker.clusters == 2
    assert by_speaker.estimate == by_item.estimate == pytest.approx(1 - 40 / 60)
    assert by_speaker.high - by_speaker.low > by_item.high - by_item.low
    assert by_speaker.p_not_better > 0.1 > by_item.p_not_better
    both = reduction_intervals(agent, single, ["s1"] * 20 + ["s2"] * 20, resamples=100)
    assert [i.unit for i in both] == ["item", "speaker"]
    assert [i.unit for i in reduction_intervals(agent, single, [None] * 40, resamples=100)] == ["item"]


def test_bootstrap_rejects_unusable_input():
    from speech_hands.metrics.significance import paired_bootstrap

    with pytest.raises(ValueError, match="one entry per item"):
        paired_bootstrap([1, 2], [1])
    with pytest.raises(ValueError, match="nothing to reduce"):
        paired_bootstrap([1, 2], [0, 0])
    with pytest.raises(ValueError, match="one label per item"):
        paired_bootstrap([1, 2], [1, 2], groups=["a"])
