"""trl's SFTTrainer plus the one thing it does not count: loss-bearing tokens (for tokens/s in metrics)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainerCallback
from trl import SFTTrainer

from .configs import TrainerConfigs

log = logging.getLogger(__name__)


class KubetuneSFTTrainer(SFTTrainer):
    """Counts the label tokens that carry loss (not prompt, not padding) as training proceeds."""

    loss_tokens: int = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        labels = inputs.get("labels")
        if isinstance(labels, torch.Tensor):
            self.loss_tokens += int((labels[..., 1:] != -100).sum())
        return super().training_step(model, inputs, num_items_in_batch)

    def total_loss_tokens(self) -> int:
        """Summed over all processes of a distributed run."""
        count = torch.tensor(self.loss_tokens, device=self.accelerator.device)
        return int(self.accelerator.reduce(count, reduction="sum").item())


def truncate_tokenized(dataset: Dataset, max_length: int) -> Dataset:
    """Cut tokenized rows to `max_length`: trl does not truncate padding-free batches itself.

    Every per-token column (input_ids, labels, completion/assistant masks) is cut alike."""

    def cut(row):
        length = len(row["input_ids"])
        if length <= max_length:
            return {}
        return {
            name: value[:max_length] for name, value in row.items() if isinstance(value, list) and len(value) == length
        }

    return dataset.map(cut, desc="truncating rows")


def build_trainer(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    configs: TrainerConfigs,
    train: Dataset,
    evaluation: Dataset | None,
    callbacks: Sequence[TrainerCallback],
    max_seq_length: int,
) -> KubetuneSFTTrainer:
    """The trainer with the LoRA adapter attached (trl applies `configs.lora` to the model)."""
    trainer = KubetuneSFTTrainer(
        model=model,
        args=configs.sft,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=configs.lora,
        callbacks=list(callbacks),
    )
    if configs.sft.padding_free and configs.sft.max_length is None:
        trainer.train_dataset = truncate_tokenized(trainer.train_dataset, max_seq_length)
        if trainer.eval_dataset is not None:
            trainer.eval_dataset = truncate_tokenized(trainer.eval_dataset, max_seq_length)
    return trainer
