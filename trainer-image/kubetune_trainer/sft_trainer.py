"""trl's SFTTrainer plus what it does not do: count loss-bearing tokens (for tokens/s in metrics), and count the
rows `training.maxSeqLength` cuts or drops (trl drops rows left without loss tokens silently), failing with a
clear message when no row is left."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import CallbackHandler
from trl import SFTTrainer
from trl.data_utils import pack_dataset

from .configs import TrainerConfigs
from .errors import InvalidInputError
from .generation_eval import prompt_text

log = logging.getLogger(__name__)

IGNORED = -100
CUT_COLUMN = "kubetune_cut"
SPLIT_NAMES = {"train": "training", "eval": "evaluation"}
PROMPT_CHECK_BATCH = 256


@dataclass(frozen=True)
class LengthReport:
    """What `training.maxSeqLength` did to one split: rows cut (they still train on the part that fits) and rows
    dropped (cut before their answer starts, so no token carries loss)."""

    rows: int
    cut: int
    dropped: int
    longest: int


class KubetuneSFTTrainer(SFTTrainer):
    """Counts the label tokens that carry loss (not prompt, not padding) as training proceeds, and cuts rows to
    `max_seq_length` itself so that what the cut costs is known (`length_reports`, per split)."""

    loss_tokens: int = 0

    def __init__(self, *args, max_seq_length: int, **kwargs) -> None:
        self.max_seq_length = max_seq_length
        self.length_reports: dict[str, LengthReport] = {}
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        """trl's tokenization without its truncation, then our counted cut, then trl's packing if asked."""
        if not isinstance(dataset, Dataset) or "input_ids" in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        limit = args.max_length
        args.max_length = None  # trl would cut and drop rows without telling how many
        try:
            prepared = super()._prepare_dataset(dataset, processing_class, args, False, formatting_func, dataset_name)
        finally:
            args.max_length = limit
        prepared, report = cut_to_length(prepared, self.max_seq_length)
        # trl prepares the training set first, as "train"; an evaluation set (a mix source) of that name too.
        self.length_reports[f"eval_{dataset_name}" if dataset_name in self.length_reports else dataset_name] = report
        check_rows_left(dataset_name, report, self.max_seq_length)
        if packing:
            columns = prepared.select_columns(["input_ids", "labels"])
            prepared = pack_dataset(columns, self.max_seq_length, args.packing_strategy, {})
        return prepared

    def training_step(self, model, inputs, num_items_in_batch=None):
        labels = inputs.get("labels")
        if isinstance(labels, torch.Tensor):
            self.loss_tokens += int((labels[..., 1:] != IGNORED).sum())
        return super().training_step(model, inputs, num_items_in_batch)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """With several evaluation sets (dataset.mix) the Trainer evaluates and logs each (eval_<source>_loss) and
        tells the callbacks once per set, none of them with an eval_loss. Here the callbacks hear of one evaluation
        with every set's metrics plus the overall eval_loss (the row-weighted mean, `overall_eval_loss`), which is
        also logged and returned: progress, loadBestModelAtEnd and early stopping read eval_loss as with one set."""
        sets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(sets, dict):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        with _evaluate_events_held(self.callback_handler):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        overall = overall_eval_loss(metrics, {name: len(rows) for name, rows in sets.items()}, metric_key_prefix)
        if overall is not None:
            key = f"{metric_key_prefix}_loss"
            metrics[key] = overall
            self.log({key: overall})
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def total_loss_tokens(self) -> int:
        """Summed over all processes of a distributed run."""
        count = torch.tensor(self.loss_tokens, device=self.accelerator.device)
        return int(self.accelerator.reduce(count, reduction="sum").item())


@contextmanager
def _evaluate_events_held(handler: CallbackHandler) -> Iterator[None]:
    """Swallow the per-set on_evaluate events of one multi-set evaluation (an instance attribute shadows the
    handler's method while it lasts); the caller sends one event with all the metrics afterwards."""
    handler.on_evaluate = lambda args, state, control, metrics: control  # type: ignore[method-assign]
    try:
        yield
    finally:
        del handler.on_evaluate


def overall_eval_loss(metrics: dict[str, float], rows: dict[str, int], prefix: str = "eval") -> float | None:
    """The mean of the per-set losses weighted by their rows: what one pass over all the sets gives (up to how
    batches fall), so eval_loss keeps its meaning whether the rows are evaluated together or per source."""
    losses = {name: metrics.get(f"{prefix}_{name}_loss") for name in rows}
    counted = {name: loss for name, loss in losses.items() if loss is not None and rows[name] > 0}
    total = sum(rows[name] for name in counted)
    if not total:
        return None
    return sum(loss * rows[name] for name, loss in counted.items()) / total


def cut_to_length(dataset: Dataset, max_length: int) -> tuple[Dataset, LengthReport]:
    """Cut tokenized rows to `max_length` (every per-token column alike) and drop those left without a loss token.

    Applies to padding-free batches too, which trl does not truncate itself."""

    def cut(row):
        length = len(row["input_ids"])
        if length <= max_length:
            return {CUT_COLUMN: 0}
        shortened = {
            name: value[:max_length] for name, value in row.items() if isinstance(value, list) and len(value) == length
        }
        return {**shortened, CUT_COLUMN: length}

    marked = dataset.map(cut, desc="cutting rows to maxSeqLength")
    lengths = marked[CUT_COLUMN]
    kept = marked.filter(lambda row: any(label != IGNORED for label in row["labels"]), desc="dropping rows")
    report = LengthReport(
        rows=len(dataset),
        cut=sum(1 for length in lengths if length) - (len(marked) - len(kept)),
        dropped=len(marked) - len(kept),
        longest=max(lengths, default=0),
    )
    return kept.remove_columns(CUT_COLUMN), report


def check_rows_left(split: str, report: LengthReport, max_seq_length: int) -> None:
    """No training or evaluation row left after the cut: stop now (exit 64) instead of failing inside the Trainer."""
    what = SPLIT_NAMES.get(split, split)
    if report.dropped:
        log.warning(
            "%d of %d %s rows dropped: their prompt alone fills training.maxSeqLength=%d, no answer token is left",
            report.dropped,
            report.rows,
            what,
            max_seq_length,
        )
    if report.cut:
        log.warning("%d of %d %s rows cut to training.maxSeqLength=%d", report.cut, report.rows, what, max_seq_length)
    if report.rows and report.dropped == report.rows:
        raise InvalidInputError(
            f"no {what} row is left: all {report.rows} are cut by training.maxSeqLength={max_seq_length} before "
            f"their answer starts (the longest row has {report.longest} tokens); raise training.maxSeqLength or "
            "shorten the prompts"
        )


def check_prompts_fit(
    split: str, rows: Dataset | None, tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> None:
    """Before the base model loads (minutes for a 7B model): fail at once when no row's prompt leaves room for an
    answer token within `max_seq_length`. Reads rows only until one fits, so it is cheap on good data; prompts
    are counted without special tokens, so it never refuses data that trl would train on."""
    if rows is None or len(rows) == 0 or "prompt" not in rows.column_names:
        return
    shortest = None
    for start in range(0, len(rows), PROMPT_CHECK_BATCH):
        chunk = rows.select(range(start, min(start + PROMPT_CHECK_BATCH, len(rows))))
        prompts = [prompt_text(row, tokenizer) for row in chunk]
        lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        if min(lengths) < max_seq_length:
            return
        shortest = min(lengths) if shortest is None else min(shortest, *lengths)
    raise InvalidInputError(
        f"no {SPLIT_NAMES.get(split, split)} row is left: all {len(rows)} are cut by training.maxSeqLength="
        f"{max_seq_length} before their answer starts (the shortest prompt has {shortest} tokens); raise "
        "training.maxSeqLength or shorten the prompts"
    )


def build_trainer(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    configs: TrainerConfigs,
    train: Dataset,
    evaluation: Dataset | dict[str, Dataset] | None,
    callbacks: Sequence[TrainerCallback],
    max_seq_length: int,
    compute_loss_func: Callable | None = None,
) -> KubetuneSFTTrainer:
    """The trainer with the LoRA adapter attached (trl applies `configs.lora` to the model). `compute_loss_func`
    replaces the plain loss (training.lossWeights); `evaluation` may be a dict of named sets (dataset.mix), each
    evaluated and logged apart. trl 1.x still supports it, with a deprecation warning for 2.0
    that is filtered here (the pin is trl<2), since users cannot act on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`compute_loss_func` is deprecated", category=FutureWarning)
        return KubetuneSFTTrainer(
            model=model,
            args=configs.sft,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
            peft_config=configs.lora,
            callbacks=list(callbacks),
            max_seq_length=max_seq_length,
            compute_loss_func=compute_loss_func,
        )
