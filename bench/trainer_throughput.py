"""Training throughput: the seed tutorial's recipe vs kubetune's trainer defaults, on the same model and data.

Both sides train the same LoRA shape on the same random-init Llama (a few M parameters, offline) for the same
number of optimizer steps with the same batch size, learning rate, schedule and precision (fp32, one torch
thread), so only the data pipeline differs:
  tutorial  every row padded to 512 tokens, labels = input_ids, transformers' Trainer (bench/baselines/).
  kubetune  the trainer's own code path (build_configs + build_trainer on a default spec): prompt/completion
            rows, dynamic padding, completion-only loss. On long rows also the spec's `packing: true`.
Two datasets: short rows (~30 tokens) and long rows (~200 tokens). Printed per run: useful tokens/s (real,
non-pad tokens of the rows trained on), loss-bearing tokens/s, rows/s, the ratio to the tutorial, and the
held-out answer loss (mean NLL of the answer tokens given each recipe's own prompt; lower is better).

    .venv/bin/python bench/trainer_throughput.py [--short-steps 30] [--long-steps 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from bench.baselines.tutorial_trainer import tutorial_prompt, tutorial_trainer  # noqa: E402
from tests.support.tiny_model import build_tiny_model, synthetic_facts  # noqa: E402

BATCH_SIZE = 8
LEARNING_RATE = 1e-3


@dataclass
class RunResult:
    recipe: str
    rows: str
    steps: int
    seconds: float
    real_tokens: int
    loss_tokens: int
    rows_seen: int
    answer_loss: float

    @property
    def real_tokens_per_s(self) -> float:
        return self.real_tokens / self.seconds

    @property
    def loss_tokens_per_s(self) -> float:
        return self.loss_tokens / self.seconds


class CountingCollator:
    """Wraps a collator and counts real (attention) tokens and loss-bearing label tokens of every batch."""

    def __init__(self, inner) -> None:
        self.inner, self.real, self.loss, self.rows = inner, 0, 0, 0

    def __call__(self, features):
        batch = self.inner(features)
        labels = batch["labels"]
        if "attention_mask" in batch:
            self.real += int(batch["attention_mask"].sum())
        else:  # padding-free / packed batches carry no padding at all
            self.real += int(batch["input_ids"].numel())
        self.loss += int((labels[..., 1:] != -100).sum())
        self.rows += len(features)
        return batch


def build_model(target: Path) -> Path:
    """A ~3.5M-parameter Llama (hidden 256, 4 layers) with the tiny test tokenizer."""
    return build_tiny_model(
        target, hidden_size=256, intermediate_size=688, num_hidden_layers=4, max_position_embeddings=1024
    )


def make_rows(kind: str, count: int, seed: int) -> Dataset:
    """Short rows: a fact question with a one-word answer (~30 tokens). Long: a ~125-word answer (~200 tokens)."""
    rng = random.Random(seed)
    facts = synthetic_facts()
    vocabulary = sorted({w for f in facts for w in f.question.lower().rstrip("?").split()} | {f.answer for f in facts})
    rows = []
    for index in range(count):
        fact = facts[index % len(facts)]
        answer = fact.answer
        if kind == "long":
            answer += " " + " ".join(rng.choice(vocabulary) for _ in range(rng.randint(110, 140)))
        rows.append({"instruction": fact.question, "input": "", "output": answer})
    return Dataset.from_list(rows)


def common_arguments(steps: int) -> dict:
    return dict(
        max_steps=steps,
        per_device_train_batch_size=BATCH_SIZE,
        gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATE,
        warmup_steps=0.03,
        lr_scheduler_type="cosine",
        use_cpu=True,
        logging_steps=10,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )


def kubetune_trainer(model_dir: Path, rows: Dataset, output_dir: Path, steps: int, packing: bool):
    """kubetune's own mapping and trainer for a spec with defaults except the settings shared with the baseline."""
    from kubetune.api import FineTuneJobSpec
    from kubetune_trainer.configs import build_configs
    from kubetune_trainer.data_formats import format_rows
    from kubetune_trainer.device import DeviceInfo
    from kubetune_trainer.model_loading import ModelLocation, load_model, load_tokenizer
    from kubetune_trainer.sft_trainer import build_trainer

    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"pvc": {"claimName": "bench", "path": "model"}},
            "dataset": {"pvc": {"claimName": "bench", "path": "rows.jsonl"}},
            "training": {
                "maxSteps": steps,
                "batchSize": BATCH_SIZE,
                "gradientAccumulationSteps": 1,
                "learningRate": LEARNING_RATE,
                "warmupRatio": 0.03,
                "scheduler": "cosine",
                "seed": 0,
                "saveSteps": 10**6,
                "packing": packing,
            },
        }
    )
    device = DeviceInfo(kind="cpu")
    configs = build_configs(spec, checkpoints_dir=output_dir, device=device, has_eval=False)
    location = ModelLocation(str(model_dir), None, False)
    tokenizer = load_tokenizer(location)
    model = load_model(location, configs.precision, device, None, gradient_checkpointing=False)
    train = format_rows(rows, "alpaca").dataset
    trainer = build_trainer(model, tokenizer, configs, train, None, [], spec.training.max_seq_length)
    return trainer, tokenizer


def answer_loss(model, tokenizer, rows: Dataset, prompt_of) -> float:
    """Mean NLL of the answer tokens (no eos) given the recipe's own prompt, over held-out rows."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            prompt = tokenizer(prompt_of(row), add_special_tokens=False)["input_ids"]
            answer = tokenizer(row["output"], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + answer])
            labels = torch.tensor([[-100] * len(prompt) + answer])
            loss = model(input_ids=ids, labels=labels).loss
            total += float(loss) * len(answer)
            count += len(answer)
    return total / count


def kubetune_prompt(row) -> str:
    from kubetune_trainer.data_formats import ALPACA_TEMPLATE, ALPACA_TEMPLATE_NO_INPUT

    template = ALPACA_TEMPLATE if row["input"] else ALPACA_TEMPLATE_NO_INPUT
    return template.format(instruction=row["instruction"], input=row["input"])


def run(
    recipe: str, kind: str, model_dir: Path, train: Dataset, held_out: Dataset, steps: int, work: Path
) -> RunResult:
    torch.manual_seed(0)
    if recipe == "tutorial":
        trainer, tokenizer = tutorial_trainer(model_dir, train, work / recipe, common_arguments(steps))
        prompt_of = tutorial_prompt
    else:
        trainer, tokenizer = kubetune_trainer(
            model_dir, train, work / recipe, steps, packing=recipe.endswith("packing")
        )
        prompt_of = kubetune_prompt
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    output = trainer.train()
    seconds = float(output.metrics["train_runtime"])
    loss = answer_loss(trainer.model, tokenizer, held_out, prompt_of)
    return RunResult(recipe, kind, steps, seconds, counter.real, counter.loss, counter.rows, loss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short-steps", type=int, default=30)
    parser.add_argument("--long-steps", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()

    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as folder:
        work = Path(folder)
        model_dir = build_model(work / "model")
        plans = [
            ("short", args.short_steps, ["tutorial", "kubetune"]),
            ("long", args.long_steps, ["tutorial", "kubetune", "kubetune+packing"]),
        ]
        for kind, steps, recipes in plans:
            rows = make_rows(kind, 512, seed=1)
            held_out = make_rows(kind, 16, seed=2)
            for recipe in recipes:
                result = run(recipe, kind, model_dir, rows, held_out, steps, work)
                results.append(result)
                print(f"  done {kind:5} {recipe:17} {result.seconds:6.1f} s", flush=True)

    print()
    header = (
        f"{'rows':5} {'recipe':17} {'steps':>5} {'seconds':>8} {'rows/s':>8} {'useful tok/s':>13} "
        f"{'loss tok/s':>11} {'x tutorial':>10} {'answer loss':>11} {'tok/row':>8}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        baseline = next(r for r in results if r.rows == result.rows and r.recipe == "tutorial")
        ratio = result.real_tokens_per_s / baseline.real_tokens_per_s
        # A packed sequence holds several rows, so rows/s of packed batches would not be comparable.
        packed = "packing" in result.recipe
        rows_per_s = "-" if packed else f"{result.rows_seen / result.seconds:.1f}"
        tokens_per_row = "-" if packed else f"{result.real_tokens / result.rows_seen:.1f}"
        print(
            f"{result.rows:5} {result.recipe:17} {result.steps:5d} {result.seconds:8.1f} "
            f"{rows_per_s:>8} {result.real_tokens_per_s:13.0f} "
            f"{result.loss_tokens_per_s:11.0f} {ratio:9.2f}x {result.answer_loss:11.4f} {tokens_per_row:>8}"
        )
    print(
        "\nuseful tok/s: real (non-pad) tokens of the rows trained on per second; loss tok/s: tokens carrying loss"
        " (the tutorial also trains the prompt; kubetune only the answer). answer loss: held-out answer NLL,"
        f" perplexity = exp(loss); e.g. exp({results[0].answer_loss:.3f}) = {math.exp(results[0].answer_loss):.2f}."
    )
    if args.json:
        args.json.write_text(
            json.dumps([asdict(r) | {"useful_tokens_per_s": r.real_tokens_per_s} for r in results], indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
