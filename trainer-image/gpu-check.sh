#!/usr/bin/env bash
# GPU check of the kubetune trainer: LoRA and QLoRA through the real entry point (python -m kubetune_trainer)
# on a random-init ~100M-parameter Llama built here (no Hub access needed), a few dozen steps each.
# Prints the precision chosen (bf16 expected on H100/A100), tokens/s, peak GPU memory, and whether the saved
# adapter reloads and lowers the loss. Usage, from the repository root:  bash trainer-image/gpu-check.sh
# Needs torch (CUDA), transformers, peft, accelerate, trl, datasets, bitsandbytes, pydantic, tokenizers.
# KUBETUNE_GPU_CHECK_CPU=1 runs a tiny version on CPU (a smoke test of this script, not a GPU check).
# Several GPUs: every run is repeated with one process per GPU through the container's entry
# (python -m kubetune_trainer.launch, torchrun), checking all ranks finish, the adapter is one, and tokens/s rise.
# KUBETUNE_GPU_CHECK_PROCS=N sets the process count (default: the visible GPUs; with the CPU smoke test, gloo).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
WORK="${KUBETUNE_GPU_CHECK_DIR:-$(mktemp -d -t kubetune-gpu-check-XXXXXX)}"
export PYTHONPATH="$REPO/operator:$REPO/trainer-image:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export HF_HOME="$WORK/hf-home" KUBETUNE_PVC_ROOT="$WORK/pvc"
echo "gpu-check: work folder $WORK"

python3 - "$WORK" <<'PY'
import json, os, random, subprocess, sys, time
from pathlib import Path

import torch

work = Path(sys.argv[1])
cpu_smoke = os.environ.get("KUBETUNE_GPU_CHECK_CPU") == "1"
if not torch.cuda.is_available() and not cpu_smoke:
    sys.exit("gpu-check: no CUDA device visible (set KUBETUNE_GPU_CHECK_CPU=1 for a CPU smoke test)")
import peft, transformers, trl  # noqa: E401  (fail early, with versions printed below)

device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
print(f"gpu-check: {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
      f"trl {trl.__version__}, peft {peft.__version__}")

from transformers import LlamaConfig, LlamaForCausalLM
from tests.support.tiny_model import build_tokenizer, synthetic_facts

model_dir = work / "pvc" / "models" / "llama-100m"
tokenizer = build_tokenizer(model_dir)
shape = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=16, num_attention_heads=12,
             num_key_value_heads=4) if not cpu_smoke else dict(hidden_size=128, intermediate_size=256,
             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=1024, initializer_range=0.02,
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                     tie_word_embeddings=False, **shape)
torch.manual_seed(0)
model = LlamaForCausalLM(config)
model.generation_config.pad_token_id = tokenizer.pad_token_id
model.save_pretrained(model_dir)
print(f"gpu-check: built a random-init Llama with {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
del model

# Alpaca rows of ~150-250 tokens: a fact question, and a long answer of words from the fact vocabulary.
rng = random.Random(0)
facts = synthetic_facts()
words = sorted({w for f in facts for w in (f.question.lower().rstrip("?").split() + [f.answer])})
rows = []
for i in range(1024):
    fact = facts[i % len(facts)]
    answer = fact.answer + " " + " ".join(rng.choice(words) for _ in range(rng.randint(30, 60)))
    rows.append({"instruction": fact.question, "input": "", "output": answer})
data = work / "pvc" / "data" / "rows.jsonl"
data.parent.mkdir(parents=True, exist_ok=True)
data.write_text("".join(json.dumps(r) + "\n" for r in rows))

steps = 4 if cpu_smoke else 40
base_spec = {
    "baseModel": {"pvc": {"claimName": "models", "path": "llama-100m"}},
    "dataset": {"pvc": {"claimName": "data", "path": "rows.jsonl"}, "evalFraction": 0.03},
    "training": {"maxSteps": steps, "batchSize": 16, "gradientAccumulationSteps": 1, "learningRate": 1e-3,
                 "maxSeqLength": 512, "saveSteps": steps // 2, "loggingSteps": 5, "precision": "auto"},
}
runs = {
    "lora": base_spec,
    "qlora": {**base_spec, "method": "qlora",
              "quantization": {"bits": 4, "type": "nf4", "doubleQuant": True, "computeDtype": "bfloat16"},
              "training": {**base_spec["training"], "optimizer": "paged_adamw_8bit" if not cpu_smoke else "adamw_torch"}},
}


def loss_on(model, rows_text):
    batch = tokenizer(rows_text, return_tensors="pt", padding=True).to(model.device)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        return float(model(**batch, labels=labels).loss)


failures, results = [], {}
sample = [f"### Instruction:\n{r['instruction']}\n\n### Response:\n{r['output']}" for r in rows[:8]]
for name, spec in runs.items():
    spec_path, output = work / f"{name}.json", work / f"out-{name}"
    spec_path.write_text(json.dumps(spec))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "kubetune_trainer", "--spec", str(spec_path), "--output", str(output)],
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-8000:])
        failures.append(f"{name}: trainer exited {proc.returncode}")
        continue
    metrics = json.loads((output / "adapter" / "metrics.json").read_text())
    manifest = json.loads((output / "adapter" / "kubetune.json").read_text())
    # Reload from disk onto a fresh base (4-bit for QLoRA) and check the adapter lowers the loss.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    kwargs = {"dtype": torch.bfloat16} if torch.cuda.is_available() else {}
    if name == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    base = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    base_loss = loss_on(base, sample)
    adapted = PeftModel.from_pretrained(base, str(output / "adapter"))
    adapted_loss = loss_on(adapted, sample)
    reloads = adapted_loss < base_loss
    results[name] = dict(precision=manifest["precision"], steps=metrics["steps"],
                         loss_tokens_per_s=metrics.get("tokensPerSecond"),
                         peak_gpu_gib=round(metrics["peakMemoryBytes"] / 2**30, 2),
                         train_seconds=metrics["wallSeconds"], process_seconds=round(wall, 1),
                         eval_loss=metrics.get("evalLoss"), base_loss=round(base_loss, 3),
                         reloaded_adapter_loss=round(adapted_loss, 3), adapter_reloads_and_helps=reloads)
    print(f"gpu-check {name}: " + json.dumps(results[name]))
    if metrics["steps"] != steps:
        failures.append(f"{name}: ran {metrics['steps']} steps, expected {steps}")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported() and manifest["precision"] != "bf16":
        failures.append(f"{name}: precision {manifest['precision']}, expected bf16 on {device}")
    if not reloads:
        failures.append(f"{name}: reloaded adapter loss {adapted_loss:.3f} not below base {base_loss:.3f}")
    del base, adapted
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

procs = int(os.environ.get("KUBETUNE_GPU_CHECK_PROCS") or (torch.cuda.device_count() if torch.cuda.is_available() else 1))
if procs > 1:
    print(f"gpu-check: {procs} processes, one per GPU (torchrun through kubetune_trainer.launch)")
    for name, spec in runs.items():
        if name not in results:
            continue
        spec_path, output = work / f"{name}.json", work / f"out-{name}-x{procs}"
        env = {**os.environ, "KUBETUNE_PROCS_PER_NODE": str(procs), "KUBETUNE_NODES": "1"}
        proc = subprocess.run([sys.executable, "-m", "kubetune_trainer.launch", "--spec", str(spec_path),
                               "--output", str(output)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-8000:])
            failures.append(f"{name} x{procs}: launcher exited {proc.returncode}")
            continue
        metrics = json.loads((output / "adapter" / "metrics.json").read_text())
        single = results[name]["loss_tokens_per_s"] or 0.0
        multi = metrics.get("tokensPerSecond") or 0.0
        results[f"{name}-x{procs}"] = dict(steps=metrics["steps"], loss_tokens_per_s=multi,
                                           speedup_vs_one=round(multi / single, 2) if single else None,
                                           peak_gpu_gib=round(metrics["peakMemoryBytes"] / 2**30, 2),
                                           eval_loss=metrics.get("evalLoss"))
        print(f"gpu-check {name} x{procs}: " + json.dumps(results[f"{name}-x{procs}"]))
        if metrics["steps"] != steps:
            failures.append(f"{name} x{procs}: ran {metrics['steps']} steps, expected {steps}")
        if not (output / "adapter" / "adapter_model.safetensors").is_file():
            failures.append(f"{name} x{procs}: no adapter written")
        if torch.cuda.is_available() and multi <= single:
            failures.append(f"{name} x{procs}: {multi:.0f} tokens/s, not above one GPU's {single:.0f}")

print("gpu-check summary: " + json.dumps(results, indent=2))
if failures:
    sys.exit("gpu-check FAILED: " + "; ".join(failures))
print("gpu-check OK")
PY
