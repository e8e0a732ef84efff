"""The human-evaluation export (`evaluation.humanEvalSamples`): held-out prompts with the reference, the base
model's and the fine-tuned model's greedy answers, as a CSV with empty `rating` and `comment` columns for people
to fill in (the tutorial's side-by-side review sheet).

The base answers come from the same model object: a LoRA/QLoRA model with its adapter switched off (PEFT's
`disable_adapter()`), so no second copy is loaded. A fully fine-tuned model has no adapter to switch off, so the
original base model is loaded once more for inference only: a few bytes per weight where training needed about
sixteen, so it fits wherever training did, and people get the comparison they asked for.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from .generation_eval import greedy_answer, reference_text

log = logging.getLogger(__name__)

COLUMNS = ("id", "prompt", "reference", "base_answer", "finetuned_answer", "rating", "comment")


@dataclass(frozen=True)
class HumanEvalExport:
    path: Path
    rows: int


def readable_prompt(prompt: str | list[dict]) -> str:
    """What a reviewer reads: the prompt text, or one `role: content` line per chat message (the chat template's
    special tokens are for the model, not for people)."""
    if isinstance(prompt, list):
        return "\n".join(f"{message['role']}: {message['content']}" for message in prompt)
    return prompt


def pick_rows(rows: Dataset, samples: int, seed: int) -> Dataset:
    """`samples` rows chosen by `seed`: the same job gives the same sheet, another seed another one."""
    return rows.shuffle(seed=seed).select(range(min(samples, len(rows))))


def write_human_eval(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Dataset | None,
    *,
    samples: int,
    max_new_tokens: int,
    seed: int,
    path: Path,
    load_base: Callable[[], torch.nn.Module] | None = None,
) -> HumanEvalExport | None:
    """Write the sheet at `path` (atomically); None when off or impossible (with a log line saying why).

    `model` is the fine-tuned model; `load_base` gives the original base model when `model` has no adapter to
    switch off (full fine-tuning)."""
    if samples <= 0:
        return None
    if rows is None or len(rows) == 0:
        log.warning("evaluation.humanEvalSamples needs held-out rows (dataset.evalFraction > 0 or evalSplit); skipped")
        return None
    if "prompt" not in rows.column_names:
        log.warning("evaluation.humanEvalSamples needs prompt/answer data; skipped for text data")
        return None
    started = time.monotonic()
    chosen = pick_rows(rows, samples, seed)
    model.eval()
    finetuned = [greedy_answer(model, tokenizer, row, max_new_tokens) for row in chosen]
    base = _base_answers(model, tokenizer, chosen, max_new_tokens, load_base)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8", newline="") as handle:  # csv writes \r\n itself (RFC 4180)
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for number, (row, base_answer, answer) in enumerate(zip(chosen, base, finetuned, strict=True), start=1):
            prompt = readable_prompt(row["prompt"])
            writer.writerow((number, prompt, reference_text(row).strip(), base_answer, answer, "", ""))
    temporary.replace(path)
    seconds = time.monotonic() - started
    log.info("human-evaluation sheet with %d prompts written to %s in %.1f s", len(chosen), path, seconds)
    return HumanEvalExport(path, len(chosen))


def _base_answers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Dataset,
    max_new_tokens: int,
    load_base: Callable[[], torch.nn.Module] | None,
) -> list[str]:
    from peft import PeftModel

    if isinstance(model, PeftModel):
        with model.disable_adapter():
            return [greedy_answer(model, tokenizer, row, max_new_tokens) for row in rows]
    if load_base is None:
        raise ValueError("the base model's answers need the adapter switched off or the base model loaded")
    base = load_base()
    try:
        base.eval()
        return [greedy_answer(base, tokenizer, row, max_new_tokens) for row in rows]
    finally:
        del base
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
