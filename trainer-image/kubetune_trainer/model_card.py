"""The adapter's README.md: what it is, how it was trained, how well it did, how to use it, and its limits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubetune.api import FineTuneJobSpec, TrainingMetrics
from kubetune.api.runtime import HUMAN_EVAL_FILE

from .data import PreparedData
from .generation_eval import METHOD as GENERATION_METHOD
from .sft_trainer import SPLIT_NAMES, LengthReport

METHOD_NAMES = {"lora": "LoRA", "qlora": "QLoRA", "full": "Fully fine-tuned"}


def _example_prompt(data: PreparedData) -> str:
    """Python lines that build a prompt the way training did, for the usage snippet (with dataset.mix: as the first
    source did, its task prefix included)."""
    fmt, template, prefix = data.format, data.prompt_template, ""
    if data.mix is not None and data.sources:
        first = data.sources[0]
        fmt, template, prefix = first.format, first.prompt_template, first.task_prefix or ""
    if fmt == "chat":
        return (
            f'messages = [{{"role": "user", "content": {json.dumps(prefix + "Your question", ensure_ascii=False)}}}]\n'
            "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)"
        )
    if fmt == "text":
        return f"prompt = {json.dumps(prefix + 'The beginning of a text to continue', ensure_ascii=False)}"
    example = (template or "").replace("{instruction}", prefix + "Your instruction")
    example = example.replace("{input}", "Your input").replace("{question}", prefix + "Your question")
    return f"prompt = {example!r}"


def _length_line(lengths: Mapping[str, LengthReport], max_seq_length: int) -> str:
    """One sentence per split on what maxSeqLength cut or dropped, so the row counts above can be trusted."""
    parts = [
        f"{SPLIT_NAMES.get(split, split)}: {report.cut} cut, {report.dropped} dropped (prompt alone too long)"
        for split, report in lengths.items()
    ]
    return f"Rows longer than maxSeqLength {max_seq_length}: {'; '.join(parts) or 'none counted'}."


def _augmentation_line(metrics: TrainingMetrics) -> str:
    """What dataset.augmentation added to the training rows counted above (nothing when it was off)."""
    if not metrics.augmentation:
        return ""
    parts = []
    for result in metrics.augmentation:
        dropped = result.total_dropped()
        parts.append(
            f"{result.added} by {result.kind} with {result.model} ({result.source_rows} rows chosen, "
            f"{result.generated} texts generated, {dropped} dropped)"
        )
    return (
        "\nTraining rows added by augmentation (prompts rewritten, answers kept; evaluation rows untouched): "
        + "; ".join(parts)
        + ".\n"
    )


def _mix_section(data: PreparedData, metrics: TrainingMetrics) -> str:
    """A table of the mix's sources: where from, task prefix, probability, rows and evaluation loss."""
    if data.mix is None:
        return ""
    losses = {source.name: source.eval_loss for source in metrics.sources or []}
    rows = [
        f"| {source.name} | `{source.description}` | {source.format} | "
        f"{repr(source.task_prefix) if source.task_prefix else '-'} | {data.mix.probabilities[source.name]:.3f} | "
        f"{data.mix.rows_per_source[source.name]} of {len(source.train)} | "
        f"{len(data.eval_by_source.get(source.name) or [])} | {_value(losses.get(source.name))} |"
        for source in data.sources
    ]
    return (
        f"""
## Data mix

Each training row is drawn from a source with its probability, in an order fixed by training.seed, until
`{data.mix.stopping_strategy}` (dataset.mixUntil). Each source is evaluated on its own held-out rows; the eval loss
above is their mean weighted by evaluation rows. Prompts of a source must start with its task prefix.

| Source | From | Format | Task prefix | Probability | Training rows (of its rows) | Eval rows | Eval loss |
|---|---|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )


def _lora_settings(spec: FineTuneJobSpec) -> str:
    lora = spec.lora
    return f"r={lora.r}, alpha={lora.alpha:g}, dropout={lora.dropout:g}, modules: {_lora_modules(spec)}"


def _lora_modules(spec: FineTuneJobSpec) -> str:
    modules = ", ".join(spec.lora.target_modules)
    if spec.lora.layers_to_transform:
        modules += f" (layers {', '.join(str(layer) for layer in spec.lora.layers_to_transform)} only)"
    return modules


def _controls_rows(spec: FineTuneJobSpec) -> str:
    """Table rows for training.earlyStopping and training.lossWeights, when set."""
    rows = ""
    if (early := spec.training.early_stopping) is not None:
        rows += f"| Early stopping | patience {early.patience} evaluations, threshold {early.threshold:g} |\n"
    if (weights := spec.training.loss_weights) is not None:
        terms = ", ".join(f"`{term}`" for term in weights.terms)
        rows += f"| Loss weights | x{weights.weight:g} on the tokens of {terms} (training loss only) |\n"
    return rows


def _stop_rows(metrics: TrainingMetrics) -> str:
    """Why training ended and which step's weights these are."""
    rows = ""
    if metrics.stop_reason is not None:
        rows += f"| Stopped | {metrics.stop_reason}: {metrics.stop_message} |\n"
    if metrics.published_step is not None:
        rows += f"| Published step | {metrics.published_step} |\n"
    return rows


def _loss_curves_section(file_name: str | None) -> str:
    """The picture, linked relative to the card so it shows on the Hub and in any Markdown viewer of the folder."""
    if file_name is None:
        return ""
    return f"\n### Loss curves\n\n![Train and eval loss against the training step]({file_name})\n"


def _human_eval_line(rows: int | None) -> str:
    if rows is None:
        return ""
    return (
        f"\nA human-evaluation sheet with {rows} held-out prompts (reference, base and fine-tuned answers, empty "
        f"rating and comment columns) is `{HUMAN_EVAL_FILE}` in the output folder, beside this one.\n"
    )


def _value(number: float | int | None, digits: int = 4) -> str:
    if number is None:
        return "n/a"
    return f"{number:.{digits}f}" if isinstance(number, float) else str(number)


def render_model_card(
    spec: FineTuneJobSpec,
    data: PreparedData,
    metrics: TrainingMetrics,
    manifest: dict[str, Any],
    *,
    lengths: Mapping[str, LengthReport] | None = None,
    epochs_run: float | None = None,
    loss_curves: str | None = None,
    human_eval_rows: int | None = None,
) -> str:
    """Markdown with Hub-style front matter (library_name: peft, base_model) so the Hub shows it properly.

    `lengths`: rows cut/dropped by maxSeqLength per split; `epochs_run`: epochs actually trained (maxSteps can
    stop a run before `training.epochs`). Row counts are those that reached training. `loss_curves`: the file name
    of the loss-curve picture beside the card (embedded); `human_eval_rows`: prompts in the human-eval sheet."""
    base = spec.base_model.describe()
    eval_rows = len(data.eval) if data.eval is not None else 0
    example_prompt = _example_prompt(data)
    training = spec.training
    lengths = lengths or {}
    train_rows = lengths["train"].rows - lengths["train"].dropped if "train" in lengths else len(data.train)
    if "eval" in lengths:
        eval_rows = lengths["eval"].rows - lengths["eval"].dropped
    epochs = f"{training.epochs:g}" if epochs_run is None else f"{epochs_run:.2f} (of {training.epochs:g} planned)"
    generation = f"\nROUGE-L and BLEU: {GENERATION_METHOD}.\n" if metrics.rouge_l is not None else ""
    quantization = ""
    if spec.quantization is not None:
        q = spec.quantization
        quantization = (
            f"| Quantization | {q.bits}-bit {q.type if q.bits == 4 else ''}, double quant {q.double_quant}, "
            f"compute {q.compute_dtype} |\n"
        )
    load_base = repr(spec.base_model.name) if spec.base_model.name else '"/path/to/base-model"'
    front_matter_base = f"base_model: {spec.base_model.name}\n" if spec.base_model.name else ""
    full = spec.method == "full"
    artifact, library = ("model", "transformers") if full else ("adapter", "peft")
    lora_row = "" if full else f"| LoRA | {_lora_settings(spec)} |\n"
    readable = _loss_curves_section(loss_curves) + _human_eval_line(human_eval_rows)
    return f"""---
library_name: {library}
{front_matter_base}tags:
- kubetune
- {spec.method}
- sft
- trl
---

# {METHOD_NAMES[spec.method]} {artifact} for {base}

A {METHOD_NAMES[spec.method]} {artifact} trained by kubetune with trl's SFTTrainer on `{data.source}`
({data.format} format, {train_rows} training rows, {eval_rows} evaluation rows, {data.skipped_rows} invalid rows
skipped). {_length_line(lengths, training.max_seq_length)}
{_augmentation_line(metrics)}
## Training

| Setting | Value |
|---|---|
| Base model | {base} (revision {manifest.get("baseModelRevision") or "default"}) |
| Method | {spec.method} |
{lora_row}{quantization}| Epochs / max steps | {epochs} / {training.max_steps or "-"} |
| Learning rate | {training.learning_rate:g} ({training.scheduler}, warmup ratio {training.warmup_ratio:g}) |
| Batch | {training.batch_size} x {training.gradient_accumulation_steps} accumulation per device |
| Max sequence length | {training.max_seq_length} |
| Precision | {manifest.get("precision")} on {manifest.get("device")} |
| Loss | {"completion only" if training.completion_only_loss and data.format != "text" else "full sequence"} |
| Seed | {training.seed} |
{_controls_rows(spec)}
## Results

| Metric | Value |
|---|---|
| Train loss | {_value(metrics.train_loss)} |
| Eval loss | {_value(metrics.eval_loss)} |
| Perplexity | {_value(metrics.perplexity, 2)} |
| ROUGE-L | {_value(metrics.rouge_l)} |
| BLEU | {_value(metrics.bleu)} |
| Steps | {_value(metrics.steps)} |
| Loss-bearing tokens / s | {_value(metrics.tokens_per_second, 1)} |
{_stop_rows(metrics)}{generation}{_mix_section(data, metrics)}{readable}
## Usage

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained({load_base})
model = PeftModel.from_pretrained(base, "path/to/this/adapter")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/adapter")

{example_prompt}
inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
output = model.generate(**inputs, max_new_tokens=128)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
```

Prompts must be built as in training: format `{data.format}`, template in `kubetune.json` (`promptTemplate`);
chat data uses the tokenizer's chat template saved here.

## Intended use and limits

This adapter was trained on the data above only and was evaluated with the metrics shown, nothing more.
It can produce wrong or made-up answers with confidence. Evaluate it on your own task before use, and do not
use it for medical, legal or financial decisions without qualified human review.
"""
