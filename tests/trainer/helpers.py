"""Shared helpers of the trainer tests: specs for the tiny model, running the trainer, scoring the facts task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.api.runtime import CHECKPOINTS_DIR, ENV_PVC_ROOT, ENV_TERMINATION_LOG
from kubetune_trainer.checkpoints import list_checkpoints

from tests.support.tiny_model import synthetic_facts

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_CLAIM, MODEL_PATH = "models", "tiny"
DATA_CLAIM = "data"

# Enough for the 16-fact task on the tiny model: loss falls ~100x and greedy answers become exact.
LEARNING_TRAINING = {
    "maxSteps": 60,
    "learningRate": 5e-3,
    "batchSize": 8,
    "gradientAccumulationSteps": 1,
    "warmupRatio": 0.0,
    "saveSteps": 1000,
    "loggingSteps": 10,
}


def base_spec(data_file: str = "facts.jsonl", **overrides: Any) -> dict[str, Any]:
    """A FineTuneJob spec (wire form) training the tiny model on a data file of the data claim.
    `training` overrides are merged into the learning recipe; other sections are replaced."""
    spec: dict[str, Any] = {
        "baseModel": {"pvc": {"claimName": MODEL_CLAIM, "path": MODEL_PATH}},
        "dataset": {"pvc": {"claimName": DATA_CLAIM, "path": data_file}, "evalFraction": 0.1},
        "training": dict(LEARNING_TRAINING),
        "resources": {"gpus": 0},
    }
    for key, value in overrides.items():
        if key in ("training", "evaluation") and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


# bitsandbytes' CPU bf16 inference feature, forced on and off (pytest ids -> present?), so both code paths run
# on every machine whatever its real CPU.
CPU_BF16_FEATURE = {"cpu-bf16-amx": True, "no-cpu-bf16": False}


def force_cpu_bf16_feature(monkeypatch, present: bool) -> None:
    """Make bitsandbytes 4-bit layers created from now on believe the CPU has (or lacks) AVX512-BF16/AMX.

    bitsandbytes 0.50 decides per layer: `Linear4bit.__init__` stores `has_avx512bf16()` (the name imported
    into `bitsandbytes.nn.modules`) and `forward` repacks the weight into the CPU inference layout when it is true.
    The CPU `gemv_4bit` kernel is registered at import time from the real CPU; on a CPU without AVX512-BF16 a
    forced repack falls back to the default kernel (wrong numbers, same missing backward)."""
    import bitsandbytes.nn.modules

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: present)


def write_spec(folder: Path, spec: dict[str, Any], name: str = "spec.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


@contextmanager
def environment(**values: str):
    """Set env variables for an in-process run and restore them afterwards (usable in module fixtures)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_in_process(spec_path: Path, output: Path, pvc_root: Path, **env: str) -> int:
    """Run `kubetune_trainer.cli.main` here (no interpreter start-up: seconds faster than a subprocess)."""
    from kubetune_trainer.cli import main

    with environment(
        **{ENV_PVC_ROOT: str(pvc_root), ENV_TERMINATION_LOG: str(output.parent / "termination-log")}, **env
    ):
        return main(["--spec", str(spec_path), "--output", str(output)])


def trainer_env(pvc_root: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
    env.update({ENV_PVC_ROOT: str(pvc_root), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}, **extra)
    return env


def start_subprocess(spec_path: Path, output: Path, pvc_root: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kubetune_trainer", "--spec", str(spec_path), "--output", str(output)],
        env=trainer_env(pvc_root, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def fact_prompt(question: str) -> str:
    """The alpaca prompt the trainer builds for a row with an empty input."""
    from kubetune_trainer.data_formats import ALPACA_TEMPLATE_NO_INPUT

    return ALPACA_TEMPLATE_NO_INPUT.format(instruction=question)


def count_correct(model, tokenizer, prompt_for=fact_prompt) -> int:
    """Greedy exact-answer count on the 16 synthetic facts."""
    import torch

    correct = 0
    model.eval()
    for fact in synthetic_facts():
        encoded = tokenizer(prompt_for(fact.question), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**encoded, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += answer.strip() == fact.answer
    return correct


@dataclass(frozen=True)
class AnswerScores:
    """Teacher-forced scores of the 16 answers (answer tokens + eos) after their prompts."""

    mean_nll: float  # mean over facts of the per-token negative log-likelihood of the answer
    mean_margin: float  # mean over answer tokens of (correct logit - best other logit); > 0 means greedy-correct


def answer_scores(model, tokenizer, prompt_for=fact_prompt) -> AnswerScores:
    import torch

    nlls, margins = [], []
    model.eval()
    for fact in synthetic_facts():
        prompt = tokenizer(prompt_for(fact.question), add_special_tokens=False)["input_ids"]
        answer = tokenizer(fact.answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + answer])).logits[0].float()
        predicting = logits[len(prompt) - 1 : len(prompt) + len(answer) - 1]
        targets = torch.tensor(answer)
        nlls.append(torch.nn.functional.cross_entropy(predicting, targets).item())
        correct = predicting.gather(1, targets[:, None])[:, 0]
        others = predicting.scatter(1, targets[:, None], float("-inf")).max(dim=1).values
        margins.extend((correct - others).tolist())
    return AnswerScores(sum(nlls) / len(nlls), sum(margins) / len(margins))


def load_base(model_dir: Path, quantized: bool = False):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if quantized:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float32")
        return AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=config, device_map={"": "cpu"})
    return AutoModelForCausalLM.from_pretrained(model_dir)


def load_adapted(model_dir: Path, adapter: Path, quantized: bool = False):
    """A fresh base model with the adapter loaded from disk, and the tokenizer saved with the adapter."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    model = PeftModel.from_pretrained(load_base(model_dir, quantized), str(adapter))
    return model, AutoTokenizer.from_pretrained(adapter)


def allow_loopback(address):
    """An address policy for tests with a local https server: loopback too, otherwise what the trainer allows."""
    from kubetune_trainer.safe_fetch import public_only

    return None if address.is_loopback else public_only(address)


def newest_log_history(output: Path) -> list[dict[str, Any]]:
    """The Trainer's log history (every logged loss and evaluation so far) as the run's newest checkpoint saved it."""
    _, newest = list_checkpoints(output / CHECKPOINTS_DIR)[-1]
    return json.loads((newest / "trainer_state.json").read_text())["log_history"]
