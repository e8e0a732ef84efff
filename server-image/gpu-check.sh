#!/usr/bin/env bash
# GPU check of the kubetune server's engines, for a machine with a GPU and no registry access: first what is
# installed (nothing is downloaded; kubetune itself is installed from this checkout without dependencies), then
# bench/gpu_serving_check.py: the transformers engine, the vLLM engine and vLLM's own OpenAI server, one after
# the other, on a random-init 1B-class Llama with a LoRA adapter; output tokens/s, p50/p99 at c = 1/32/128,
# peak GPU memory, and the ratios against the goals (vLLM engine >= 3x transformers at c = 32, within 10% of
# vLLM's own server).
#
#   server-image/gpu-check.sh [extra arguments for bench/gpu_serving_check.py, e.g. --shape tiny --levels 1,32]
#   KUBETUNE_CHECK_PYTHON=/path/to/python server-image/gpu-check.sh   # an interpreter with torch and vllm
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${KUBETUNE_CHECK_PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PIP_NO_INDEX=1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
"$PYTHON" --version

echo "== installed packages this check needs"
missing=$("$PYTHON" - <<'PY'
import importlib.metadata as md
import sys
needed = ["torch", "transformers", "peft", "vllm", "fastapi", "uvicorn", "prometheus-client", "httpx", "pydantic",
          "tokenizers", "safetensors"]
missing = []
for name in needed:
    try:
        print(f"  {name} {md.version(name)}", file=sys.stderr, flush=True)
    except md.PackageNotFoundError:
        missing.append(name)
print(" ".join(missing), end="")
PY
)
"$PYTHON" -c "import torch; print('  cuda', torch.cuda.is_available(), torch.version.cuda, torch.cuda.device_count())"

if ! "$PYTHON" -c "import kubetune_server" 2>/dev/null; then
    echo "== installing kubetune from this checkout (no dependencies, no index)"
    "$PYTHON" -m pip install -q --no-deps --no-index --no-build-isolation -e . \
        || "$PYTHON" -m pip install -q --no-deps --no-index --no-build-isolation .
fi
if [ -n "${missing}" ]; then
    echo "missing here: ${missing}"
    case " ${missing} " in
        *" vllm "*) echo "without vllm only the transformers engine runs"; set -- --skip-vllm-own "$@" ;;
    esac
fi

echo "== serving check"
"$PYTHON" bench/gpu_serving_check.py "$@"
