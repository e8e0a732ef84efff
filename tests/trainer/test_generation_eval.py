"""ROUGE-L and BLEU of generated answers score Korean as they score English.

Before: rouge_score's default tokenizer kept only a-z0-9 (an identical Hangul answer scored 0.0) and BLEU on
whitespace tokens gave an identical one-word answer 0.178; each Korean assertion below failed."""

from __future__ import annotations

import pytest
from kubetune_trainer.generation_eval import METHOD, score, tokenize

KOREAN_ANSWER = "고혈압은 혈압이 지속적으로 높은 상태입니다."


@pytest.mark.parametrize("answer", [KOREAN_ANSWER, "긍정", "positive", "Paris is the capital of France."])
def test_an_identical_answer_scores_one_in_every_language(answer: str):
    assert score([answer], [answer]) == (pytest.approx(1.0), pytest.approx(1.0))


def test_a_partly_right_korean_answer_scores_between_zero_and_one():
    rouge_l, bleu = score(["고혈압은 혈압이 높은 병입니다."], [KOREAN_ANSWER])
    assert 0.5 < rouge_l < 1.0
    assert 0.0 < bleu < rouge_l < 1.0


def test_an_unrelated_korean_answer_scores_near_zero():
    rouge_l, bleu = score(["감기"], [KOREAN_ANSWER])
    assert rouge_l == 0.0 and bleu < 0.05


def test_english_is_scored_on_words_as_before():
    rouge_l, bleu = score(["the cat sat on the mat"], ["The cat is on the mat."])
    assert rouge_l == pytest.approx(5 / 6)  # 5 of 6 words in order, punctuation and case ignored
    assert 0.0 < bleu < rouge_l
    assert score(["no"], ["yes"]) == (0.0, pytest.approx(0.0, abs=1e-9))


def test_scores_are_means_over_answers():
    rouge_l, bleu = score(["긍정", "부정"], ["긍정", "중립"])
    assert rouge_l == pytest.approx(0.5) and bleu == pytest.approx(0.5)


def test_tokens_are_characters_for_hangul_and_words_elsewhere():
    assert tokenize("혈압이 높다, BP high!") == ["혈", "압", "이", "높", "다", "bp", "high"]
    assert "Hangul" in METHOD and "BLEU" in METHOD
