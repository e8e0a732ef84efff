"""The seed tutorial's LoRA recipe, rewritten as a faithful baseline for the throughput benchmark.

What is kept from the tutorial: the alpaca text layout with an always-present Input section, the tokenizer's
pad token set to its eos token (right padding), every row padded to 512 tokens, `labels = input_ids`,
transformers' plain `Trainer` with `DataCollatorForLanguageModeling(mlm=False)`, and its LoRA shape (r=16,
alpha=32, dropout 0.05, the seven Llama projections). What the benchmark sets for both sides alike, so only
the data pipeline differs: steps, batch size, learning rate and schedule, precision (fp32 on CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)

TUTORIAL_MAX_LENGTH = 512


def tutorial_text(row: dict[str, Any]) -> str:
    """The tutorial's `format_instruction`: Instruction, Input (even when empty) and Response sections."""
    return f"### Instruction:\n{row['instruction']}\n\n### Input:\n{row['input']}\n\n### Response:\n{row['output']}"


def tutorial_prompt(row: dict[str, Any]) -> str:
    """The prompt part of `tutorial_text` (what inference feeds the model before the answer)."""
    return f"### Instruction:\n{row['instruction']}\n\n### Input:\n{row['input']}\n\n### Response:\n"


def tutorial_tokenizer(model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def tutorial_dataset(rows: Dataset, tokenizer, max_length: int = TUTORIAL_MAX_LENGTH) -> Dataset:
    """Pad every row to `max_length` and copy input_ids into labels, as the tutorial's preprocess_function."""

    def preprocess(batch: dict[str, list]) -> dict[str, Any]:
        texts = [tutorial_text(dict(zip(batch, values, strict=True))) for values in zip(*batch.values(), strict=True)]
        encoded = tokenizer(texts, max_length=max_length, truncation=True, padding="max_length")
        encoded["labels"] = [list(ids) for ids in encoded["input_ids"]]
        return encoded

    return rows.map(preprocess, batched=True, remove_columns=rows.column_names)


def tutorial_lora_config() -> LoraConfig:
    return LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lora_dropout=0.05,
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )


def tutorial_trainer(
    model_dir: Path, rows: Dataset, output_dir: Path, common: dict[str, Any], callbacks: list | None = None
) -> tuple[Trainer, Any]:
    """The tutorial's Trainer on `rows`; `common` holds the TrainingArguments shared with the kubetune side."""
    tokenizer = tutorial_tokenizer(model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), tutorial_lora_config())
    arguments = TrainingArguments(output_dir=str(output_dir), report_to="none", save_strategy="no", **common)
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=tutorial_dataset(rows, tokenizer),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=callbacks,
    )
    return trainer, tokenizer
