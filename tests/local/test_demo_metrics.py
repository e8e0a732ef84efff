"""The demo's table: the class an answer names, accuracy, macro-F1, per-class recall, confusion counts and the
majority-class baseline, checked against hand-computed values."""

from __future__ import annotations

import pytest
from kubetune.local.demo import goal_met
from kubetune.local.demo_metrics import (
    NO_CLASS,
    class_of,
    majority_class,
    render_confusion,
    render_table,
    score,
)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("긍정적 (positive)", "positive"),
        (" 부정적 (negative)\n", "negative"),
        ("중립적", "neutral"),
        ("The review is NEGATIVE, not positive.", "negative"),  # the class named first
        ("이 문장은 긍정적입니다", "positive"),  # a base model's sentence counts when it names the class
        ("좋아요", NO_CLASS),
        ("", NO_CLASS),
    ],
)
def test_class_of_an_answer(answer: str, expected: str):
    assert class_of(answer) == expected


def test_scores_by_hand():
    truth = ["positive"] * 4 + ["negative"] * 4 + ["neutral"] * 2
    answered = ["positive"] * 3 + ["neutral"] + ["negative"] * 2 + ["neutral", NO_CLASS] + ["neutral"] * 2
    scores = score(truth, answered)
    assert scores.accuracy == pytest.approx(7 / 10)
    assert scores.recall == pytest.approx({"positive": 0.75, "negative": 0.5, "neutral": 1.0})
    # precision: positive 3/3, negative 2/2, neutral 2/4; F1 = 2PR/(P+R)
    f1 = [2 * 1 * 0.75 / 1.75, 2 * 1 * 0.5 / 1.5, 2 * 0.5 * 1.0 / 1.5]
    assert scores.macro_f1 == pytest.approx(sum(f1) / 3)
    assert scores.confusion["negative"] == {"negative": 2, "neutral": 1, NO_CLASS: 1}


def test_the_majority_baseline_scores_one_class():
    truth = ["positive"] * 5 + ["negative"] * 3 + ["neutral"] * 8
    majority = majority_class(["neutral"] * 150 + ["positive"] * 140 + ["negative"] * 142)
    assert majority == "neutral"
    scores = score(truth, [majority] * len(truth))
    assert scores.accuracy == 0.5 and scores.recall == {"positive": 0.0, "negative": 0.0, "neutral": 1.0}
    assert scores.macro_f1 == pytest.approx((2 * 0.5 * 1.0 / 1.5) / 3), "accuracy 50% is macro-F1 22%"
    assert not goal_met(scores)


def test_a_model_answering_nothing_scores_zero():
    scores = score(["positive", "negative", "neutral"], [NO_CLASS] * 3)
    assert scores.accuracy == 0 and scores.macro_f1 == 0 and set(scores.recall.values()) == {0.0}


def test_goal_needs_macro_f1_and_every_recall():
    truth = ["positive"] * 10 + ["negative"] * 10 + ["neutral"] * 10
    strong_but_one_weak = ["positive"] * 10 + ["negative"] * 10 + ["neutral"] * 5 + ["positive"] * 5
    assert score(truth, strong_but_one_weak).macro_f1 >= 0.8
    assert not goal_met(score(truth, strong_but_one_weak)), "neutral recall is 0.5"
    assert goal_met(score(truth, truth[:28] + ["positive"] * 2))


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="as many answers as rows"):
        score(["positive"], [])


def test_table_and_confusion_render_every_class():
    scores = score(["positive", "negative", "neutral"], ["positive", "neutral", NO_CLASS])
    table = render_table([("majority class (neutral)", scores), ("fine-tuned adapter", scores)])
    assert "macro-F1" in table and table.count("33.3%") == 2 * 2 and "recall negative" in table
    confusion = render_confusion(scores).splitlines()
    assert confusion[0].split()[-4:] == ["positive", "negative", "neutral", NO_CLASS]
    assert confusion[2].split() == ["negative", "0", "0", "1", "0"]
