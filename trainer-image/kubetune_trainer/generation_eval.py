"""Optional generation metrics on held-out rows: ROUGE-L F1 and BLEU of greedy answers, as the tutorial
evaluates. Costly on large models, so it runs only on `evaluation.generationSamples` rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


def score(predictions: list[str], references: list[str]) -> tuple[float, float]:
    """Mean ROUGE-L F1 and corpus BLEU (whitespace tokens, smoothed so short answers do not score 0)."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
    bleu = corpus_bleu(
        [[ref.split()] for ref in references],
        [pred.split() for pred in predictions],
        smoothing_function=SmoothingFunction().method1,
    )
    return sum(rouge) / len(rouge), float(bleu)


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
    device = next(model.parameters()).device
    predictions, references = [], []
    for row in rows.select(range(min(samples, len(rows)))):
        encoded = tokenizer(prompt_text(row, tokenizer), return_tensors="pt", add_special_tokens=False).to(device)
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        answer = tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        predictions.append(answer.strip())
        references.append(reference_text(row).strip())
    rouge_l, bleu = score(predictions, references)
    return GenerationScores(rouge_l=rouge_l, bleu=bleu, samples=len(predictions))
