"""Optional generation metrics on held-out rows: ROUGE-L F1 and BLEU of greedy answers, as the tutorial
evaluates, on tokens that work for Korean as for English (see METHOD). Costly on large models, so it runs only
on `evaluation.generationSamples` rows."""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass

import regex
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationScores:
    rouge_l: float
    bleu: float
    samples: int


def prompt_text(row: dict, tokenizer: PreTrainedTokenizerBase) -> str:
    """The prompt exactly as training rendered it (chat rows through the chat template)."""
    if isinstance(row["prompt"], list):
        return tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    return row["prompt"]


def reference_text(row: dict) -> str:
    completion = row["completion"]
    return completion[-1]["content"] if isinstance(completion, list) else completion


# Hangul, CJK ideographs and kana are written without spaces between words (Korean particles attach to the
# noun), so each of their characters is one token; other scripts are split into Unicode words. rouge_score's
# default tokenizer keeps only a-z0-9 (an identical Hangul answer scored 0), whitespace BLEU scored an identical
# one-word answer 0.18.
_CHARACTER_SCRIPTS = r"\p{Hangul}\p{Han}\p{Hiragana}\p{Katakana}"
_TOKEN = regex.compile(rf"[{_CHARACTER_SCRIPTS}]|[^\s\p{{P}}\p{{S}}{_CHARACTER_SCRIPTS}]+")
METHOD = (
    "ROUGE-L F1 and sentence BLEU (up to 4-grams, effective order, smoothing method 1), averaged over answers, on "
    "NFKC-lowercased tokens: one token per Hangul/CJK/kana character, Unicode words otherwise, punctuation dropped"
)


def tokenize(text: str) -> list[str]:
    """The tokens both metrics count: language-neutral, so Korean and English answers are scored alike."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


class _Tokenizer:
    """The `tokenize` method rouge_score asks of a custom tokenizer."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


def sentence_bleu(prediction: list[str], reference: list[str]) -> float:
    """BLEU of one answer with sacrebleu's "effective order": n-gram orders longer than the answer are left out,
    so an exact one- or two-token answer scores 1.0 instead of the epsilon of an empty 4-gram count."""
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

    if not prediction or not reference:
        return float(prediction == reference)
    order = min(4, len(prediction))
    weights = tuple([1.0 / order] * order)
    return float(
        nltk_sentence_bleu([reference], prediction, weights=weights, smoothing_function=SmoothingFunction().method1)
    )


def score(predictions: list[str], references: list[str]) -> tuple[float, float]:
    """Mean ROUGE-L F1 and mean sentence BLEU over the answers (see METHOD)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())
    pairs = list(zip(predictions, references, strict=True))
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in pairs]
    bleu = [sentence_bleu(tokenize(pred), tokenize(ref)) for pred, ref in pairs]
    return sum(rouge) / len(rouge), sum(bleu) / len(bleu)


@torch.no_grad()
def greedy_answer(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, row: dict, max_new_tokens: int) -> str:
    """The model's greedy answer to one row's prompt (rendered as in training), stripped; an answer cut at
    max_new_tokens inside a multi-byte character loses the partial character (U+FFFD) it would end with."""
    device = next(model.parameters()).device
    encoded = tokenizer(prompt_text(row, tokenizer), return_tensors="pt", add_special_tokens=False).to(device)
    output = model.generate(
        **encoded,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    answer = tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    return answer.rstrip().rstrip("\ufffd").strip()


@torch.no_grad()
def generation_scores(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: Dataset, samples: int, max_new_tokens: int
) -> GenerationScores | None:
    """Greedy answers for the first `samples` rows; None when the rows have no prompt/completion (text data)."""
    if samples <= 0 or "prompt" not in rows.column_names:
        if samples > 0:
            log.warning("evaluation.generationSamples needs prompt/answer data; skipped for text data")
        return None
    model.eval()
    predictions, references = [], []
    for row in rows.select(range(min(samples, len(rows)))):
        predictions.append(greedy_answer(model, tokenizer, row, max_new_tokens))
        references.append(reference_text(row).strip())
    rouge_l, bleu = score(predictions, references)
    return GenerationScores(rouge_l=rouge_l, bleu=bleu, samples=len(predictions))
