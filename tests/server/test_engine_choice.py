"""Which engine a replica runs (server-image/kubetune_server/engine_choice.py): `auto` takes vLLM only with CUDA,
vLLM installed and a model it can serve; it never takes vLLM on a CPU (where it is at best at par, see
bench/server_throughput.py). When the transformers engine is what is left and the image lacks what it needs
(bitsandbytes for a QLoRA base in the vLLM image), the replica refuses at start naming the packages."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from kubetune.api import ServeConfig
from kubetune_server.engine_choice import Host, choose_engine, make_engine
from kubetune_server.errors import UnsupportedModel

from tests.server.conftest import serve_config

EVERYTHING = frozenset({"peft", "bitsandbytes", "accelerate"})
VLLM_ARCHS = frozenset({"LlamaForCausalLM", "MistralForCausalLM"})
GPU = Host(cuda=True, vllm_architectures=VLLM_ARCHS, installed=EVERYTHING)
CPU_WITH_VLLM = Host(cuda=False, vllm_architectures=VLLM_ARCHS, installed=EVERYTHING)
QLORA = {"quantization": {"bits": 4}}


def config(engine: str = "auto", **extra) -> ServeConfig:
    return ServeConfig.model_validate(serve_config({"a": "a"}, engine=engine, **extra))


@pytest.mark.parametrize(
    ("host", "extra", "architectures", "expected"),
    [
        (GPU, {}, ["LlamaForCausalLM"], "vllm"),
        (GPU, {}, None, "vllm"),  # a Hub id not downloaded yet: vLLM resolves it
        (GPU, QLORA, ["LlamaForCausalLM"], "vllm"),  # vLLM's own bitsandbytes 4-bit path
        # never vLLM on a CPU, even with vLLM installed and the architecture supported
        (CPU_WITH_VLLM, {}, ["LlamaForCausalLM"], "transformers"),
        (Host(cuda=True, vllm_architectures=None, installed=EVERYTHING), {}, ["LlamaForCausalLM"], "transformers"),
        (GPU, {}, ["FancyNewForCausalLM"], "transformers"),
        (GPU, {"mergeAdapter": True}, ["LlamaForCausalLM"], "transformers"),
        (GPU, {"quantization": {"bits": 8}}, ["LlamaForCausalLM"], "transformers"),
    ],
)
def test_auto(host, extra, architectures, expected):
    assert choose_engine(config(**extra), architectures, host) == expected


def test_an_explicit_engine_is_taken_as_asked():
    cpu = Host(cuda=False, vllm_architectures=None, installed=EVERYTHING)
    assert choose_engine(config("vllm"), ["FancyNewForCausalLM"], cpu) == "vllm"  # vLLM refuses it with its reason
    assert choose_engine(config("transformers"), ["LlamaForCausalLM"], GPU) == "transformers"


def test_a_fallback_the_image_cannot_run_is_refused_naming_what_is_missing():
    vllm_image = Host(cuda=True, vllm_architectures=VLLM_ARCHS, installed=frozenset({"peft"}))
    with pytest.raises(UnsupportedModel) as refused:
        choose_engine(config(**QLORA), ["FancyNewForCausalLM"], vllm_image)
    message = str(refused.value)
    assert "vLLM does not support FancyNewForCausalLM" in message  # why it fell back
    assert "lacks bitsandbytes, accelerate" in message and "quantization" in message  # what is missing, for what
    assert choose_engine(config(**QLORA), ["LlamaForCausalLM"], vllm_image) == "vllm"  # vLLM needs none of them
    assert choose_engine(config(), ["FancyNewForCausalLM"], vllm_image) == "transformers"  # no quantization
    with pytest.raises(UnsupportedModel, match="engine transformers: this image lacks peft"):
        choose_engine(config("transformers"), None, Host(cuda=False, vllm_architectures=None, installed=frozenset()))


def test_auto_serves_with_the_transformers_engine_here(pvc_root):
    from kubetune_server.engine import Engine

    assert type(make_engine(config(), pvc_root=str(pvc_root))) is Engine


VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"


@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm (make setup-vllm creates it)")
def test_auto_does_not_take_vllm_on_this_cpu_where_vllm_is_installed():
    script = (
        "from kubetune.api import ServeConfig\n"
        "from kubetune_server.engine_choice import Host, choose_engine\n"
        "host = Host.probe(with_vllm=True)\n"
        "body = {'baseModel': {'pvc': {'claimName': 'm', 'path': 'base'}}, 'engine': 'auto'}\n"
        "print(choose_engine(ServeConfig.model_validate(body), ['LlamaForCausalLM'], host), host.cuda)\n"
    )
    result = subprocess.run(
        [str(VLLM_PYTHON), "-c", script], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["transformers", "False"]
