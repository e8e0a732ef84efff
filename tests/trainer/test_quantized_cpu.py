"""bitsandbytes' CPU inference repack of 4-bit layers must never reach QLoRA training.

On CPUs with AVX512-BF16/AMX, bitsandbytes 0.50 repacks a `Linear4bit` in place the first time it runs in eval
mode without gradients (an evaluation), and the repacked layer then has no backward. Both values of the CPU
feature are forced here, so the bug and its fix are exercised on every machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bitsandbytes.functional import dequantize_4bit
from bitsandbytes.nn import Linear4bit, Params4bit
from kubetune_trainer.device import DeviceInfo
from kubetune_trainer.model_loading import ModelLocation, load_model
from kubetune_trainer.quantized_cpu import keep_4bit_training_layout
from transformers import BitsAndBytesConfig

from tests.trainer.helpers import CPU_BF16_FEATURE, force_cpu_bf16_feature, load_base

AUTOGRAD_WARNING = "an autograd kernel was not registered"


@pytest.fixture(params=list(CPU_BF16_FEATURE.values()), ids=list(CPU_BF16_FEATURE))
def cpu_bf16(request, monkeypatch) -> bool:
    force_cpu_bf16_feature(monkeypatch, request.param)
    return request.param


@pytest.fixture
def cpu_bf16_on(monkeypatch) -> None:
    force_cpu_bf16_feature(monkeypatch, True)


def quantized_layer() -> Linear4bit:
    """A 128 -> 64 nf4 layer with double quantization and fp32 compute, as QLoRA loads them."""
    torch.manual_seed(0)
    layer = Linear4bit(128, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4", compress_statistics=True)
    layer.weight = Params4bit(
        torch.randn(64, 128) * 0.1, requires_grad=False, quant_type="nf4", compress_statistics=True, module=layer
    )
    return layer.to("cpu")  # quantizes


def repacked(layer: Linear4bit) -> bool:
    return bool(getattr(layer.weight.quant_state, "packing_format_for_cpu", False))


def evaluate_then_train(layer: Linear4bit) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the Trainer does to a base layer: an evaluation forward, then a training step. Returns the
    gradient of the layer's input, and the exact one (from the 4-bit weight dequantized beforehand)."""
    weight = dequantize_4bit(layer.weight.data, layer.weight.quant_state).clone()
    x = torch.randn(2, 5, 128)
    layer.eval()
    with torch.no_grad():
        layer(x)
    layer.train()
    x.requires_grad_(True)
    layer(x).sum().backward()
    return torch.ones(2, 5, 64) @ weight, x.grad


def test_without_the_fix_an_evaluation_repacks_the_layer_and_drops_its_gradient(cpu_bf16_on):
    layer = quantized_layer()
    with pytest.warns(UserWarning, match=AUTOGRAD_WARNING):
        exact, grad = evaluate_then_train(layer)
    assert repacked(layer), "the eval-mode forward switched the layer to the CPU inference layout"
    assert grad is None or not torch.allclose(grad, exact, atol=1e-4), "the gradient through the layer is lost"


def test_without_the_cpu_feature_training_after_an_evaluation_is_exact(monkeypatch):
    force_cpu_bf16_feature(monkeypatch, False)
    layer = quantized_layer()
    exact, grad = evaluate_then_train(layer)
    assert not repacked(layer)
    assert grad is not None and torch.allclose(grad, exact, atol=1e-5)


def test_keep_4bit_training_layout_keeps_gradients_exact_after_an_evaluation(cpu_bf16: bool):
    layer = quantized_layer()
    assert keep_4bit_training_layout(layer) == int(cpu_bf16)
    exact, grad = evaluate_then_train(layer)  # the AUTOGRAD_WARNING is an error in this suite (pyproject)
    assert not repacked(layer)
    assert grad is not None and torch.allclose(grad, exact, atol=1e-5)


def test_load_model_keeps_every_4bit_layer_in_the_training_layout(cpu_bf16: bool, tiny_model_dir: Path):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float32")
    model = load_model(ModelLocation(str(tiny_model_dir), None, False), "fp32", DeviceInfo("cpu"), quantization, False)
    layers = [module for module in model.modules() if isinstance(module, Linear4bit)]
    assert len(layers) == 14, "7 projections x 2 decoder layers"
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7, 8]]))
    assert not any(repacked(layer) for layer in layers)


def test_a_base_loaded_for_serving_still_uses_the_fast_inference_layout(cpu_bf16_on, tiny_model_dir: Path):
    """Only training is kept off the repack: a reload (serving, the tests' scoring) keeps bitsandbytes' default."""
    model = load_base(tiny_model_dir, quantized=True)
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7, 8]]))
    layers = [module for module in model.modules() if isinstance(module, Linear4bit)]
    assert layers and all(repacked(layer) for layer in layers)
