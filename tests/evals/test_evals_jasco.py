"""JASCO co-reasoning evaluator: CSV reading, robust judge-output parsing, scoring, several judges.

The judges here are langchain-core's scripted chat models: the judge is not what is under test (its
replies are fixed so that the parsing and the best-mean / dependence arithmetic can be checked by hand).
"""

from __future__ import annotations

import csv

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from speech_hands.errors import ConfigurationError
from speech_hands.evals.jasco import (
    INSTRUCTIONS,
    JudgeVerdict,
    judge_prompt,
    judge_rows,
    load_jasco_csv,
    parse_judge_output,
    score_verdicts,
)

COLUMNS = [
    "id",
    "audio",
    "n_frames",
    "audio_sound",
    "spoken_text",
    "prompt",
    "with_speech",
    "audio_only_target",
    "speech_only_target",
    "target_keywords",
    "tgt_text",
    "allm_output",
]


def write_csv(path, clips=2, variants=2):
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for clip in range(1, clips + 1):
            for v in range(variants):
                writer.writerow(
                    {
                        "id": clip,
                        "audio": f"{{data_folder}}/{clip}.wav",
                        "n_frames": 16000,
                        "audio_sound": "kettle whistling",
                        "spoken_text": "Who wants milk in theirs?",
                        "prompt": INSTRUCTIONS[v],
                        "with_speech": True,
                        "audio_only_target": "Someone is boiling water.",
                        "speech_only_target": "They are offering milk.",
                        "target_keywords": "tea",
                        "tgt_text": "They are making tea.",
                        "allm_output": f"answer {clip}-{v}",
                    }
                )
    return path


def test_eight_instruction_variants():
    assert len(INSTRUCTIONS) == 8 and len(set(INSTRUCTIONS)) == 8


def test_csv_and_prompt(tmp_path):
    rows = load_jasco_csv(write_csv(tmp_path / "j.csv"))
    assert len(rows) == 4 and rows[0].tgt_text == "They are making tea."
    prompt = judge_prompt(rows[1])
    for part in (
        "kettle whistling",
        "Who wants milk",
        INSTRUCTIONS[1],
        "They are making tea.",
        "tea",
        "answer 1-1",
        "Rating:",
        "Orientation: Audio-Oriented/Speech-Oriented/Both/Neither",
    ):
        assert part in prompt
    assert "{" not in prompt


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,prompt\n1,x\n")
    with pytest.raises(ConfigurationError, match="allm_output"):
        load_jasco_csv(path)


@pytest.mark.parametrize(
    ("reply", "rating", "orientation"),
    [
        ("Explanation1: ok\nRating: 2\nExplanation2: ok\nOrientation: Both", 2, "both"),
        ("**Rating:** 1\n**Orientation:** Speech-Oriented", 1, "speech"),
        ("Rating:\n0\nOrientation: \nAudio-Oriented", 0, "audio"),
        ("rating - 2. Orientation: Good", 2, "both"),  # the benchmark's older label for Both
        ("Rating: 1 ... on reflection Rating: 2\nOrientation: Neither", 2, "neither"),  # last one wins
        ("I cannot rate this.", None, None),
        ("Rating: 7\nOrientation: sideways", None, None),
    ],
)
def test_parse_judge_output(reply, rating, orientation):
    verdict = parse_judge_output(reply, "j")
    assert (verdict.rating, verdict.orientation) == (rating, orientation)


def test_scores_best_mean_and_dependence_by_hand(tmp_path):
    rows = load_jasco_csv(write_csv(tmp_path / "j.csv"))
    verdicts = [
        JudgeVerdict(judge="j", rating=2, orientation="both"),  # clip 1: best 2
        JudgeVerdict(judge="j", rating=2, orientation="audio"),  # right answer, one modality: scores 0
        JudgeVerdict(judge="j", rating=1, orientation="speech"),  # clip 2: 0
        JudgeVerdict(judge="j", rating=None, orientation=None),  # unparseable: 0, counted
    ]
    report = score_verdicts(rows, [verdicts])
    (judge,) = report.judges
    assert judge.best_mean == pytest.approx((2 + 0) / 2)
    assert (judge.audio_pct, judge.both_pct, judge.speech_pct) == pytest.approx((100 / 3, 100 / 3, 100 / 3))
    assert judge.unparseable_rating == 1 and judge.unparseable_orientation == 1


def test_judges_are_asked_averaged_and_restated(tmp_path):
    rows = load_jasco_csv(write_csv(tmp_path / "j.csv", clips=1, variants=2))
    strict = FakeListChatModel(responses=["Rating: 2\nOrientation: Both", "Rating: 1\nOrientation: Both"])
    # second judge forgets the orientation once; the restate request answers "Speech-Oriented"
    forgetful = FakeListChatModel(
        responses=[
            "Rating: 1\nExplanation2: it follows the speech",
            "Speech-Oriented",
            "Rating: 0\nOrientation: Audio-Oriented",
        ]
    )
    verdicts = judge_rows(rows, [strict, forgetful], show_progress=False)
    assert [v.score for v in verdicts[0]] == [2, 1]
    assert verdicts[1][0].orientation == "speech" and verdicts[1][0].reformatted
    report = score_verdicts(rows, verdicts)
    assert report.best_mean == pytest.approx((2 + 0) / 2)
    assert report.judges[1].reformatted == 1


def test_a_failing_judge_call_is_counted(tmp_path):
    rows = load_jasco_csv(write_csv(tmp_path / "j.csv", clips=1, variants=1))

    class Broken(FakeListChatModel):
        def invoke(self, *args, **kwargs):
            raise TimeoutError("judge server did not answer")

    verdicts = judge_rows(rows, [Broken(responses=["x"])], show_progress=False)
    assert verdicts[0][0].error and "TimeoutError" in verdicts[0][0].error
    assert score_verdicts(rows, verdicts).judges[0].failed_calls == 1
