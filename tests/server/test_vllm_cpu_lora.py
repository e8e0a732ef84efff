"""The vLLM engine's LoRA path on CPU (server-image/kubetune_server/vllm_cpu_lora.py), in `.venv-vllm`: the grouped
products equal vLLM's own reference ops for every token that has an adapter, a token without one (-1) gets
nothing added (vLLM's reference ops multiply it with the last slot), and kubetune's platform plugin makes vLLM pick
the grouped wrapper on CPU while `VLLM_PLUGINS=` (empty: no plugins) gives vLLM's stock one back.
The end-to-end check (a base request batched with two resident adapters, maxLoras 2) is in test_vllm_engine.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm (make setup-vllm creates it)")

OPS_CHECK = r"""
import json, torch
from vllm.lora.ops.torch_ops import bgmv_expand, bgmv_expand_slice, bgmv_shrink
from kubetune_server.vllm_cpu_lora import grouped_expand, grouped_shrink, slot_groups

torch.manual_seed(0)
slots, rank, features_in, features_out = 3, 8, 48, 40
a = torch.randn(slots, 1, rank, features_in)
b = torch.randn(slots, 1, features_out, rank)
indices = torch.tensor([1, 1, -1, 0, 2, -1, 0, 1])
x = torch.randn(len(indices), features_in)
groups = slot_groups(indices)
adapted = indices >= 0

ours = torch.full((len(indices), rank), 7.0)  # rows without an adapter: set to 0 (their expand adds nothing)
grouped_shrink(ours, x, a, 0.5, groups)
reference = torch.zeros(len(indices), rank)
bgmv_shrink(x, a, reference, indices, 0.5)

y0 = torch.randn(len(indices), 100)
ours_y = y0.clone()
grouped_expand(ours_y, ours, b, 30, features_out, True, groups)
reference_y = y0.clone()
bgmv_expand_slice(reference, b, reference_y, indices, 30, features_out, True)

plain = y0[:, :features_out].clone()
grouped_expand(plain, ours, b, 0, None, True, groups)
reference_plain = y0[:, :features_out].clone()
bgmv_expand(reference, b, reference_plain, indices, True)

from vllm.lora.layers.utils import LoRAMapping
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
from kubetune_server.vllm_cpu_lora import GroupedPunicaWrapperCPU

# Whole layers as vLLM calls them: slices q|k|v of widths 40, 24, 24 (lora ids 10, 20, 30 in slots 0, 1, 2; 0: none).
widths = (40, 24, 24)
a_slices = tuple(torch.randn(slots, 1, rank, features_in) for _ in widths)
b_slices = tuple(torch.randn(slots, 1, width, rank) for width in widths)
ids = (20, 20, 0, 10, 30, 0, 10, 20)
layer = {}
for name, wrapper in (("ours", GroupedPunicaWrapperCPU(64, 8, "cpu")), ("stock", PunicaWrapperCPU(64, 8, "cpu"))):
    for prefill in (False, True):
        wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=prefill), [10, 20, 30], slots, 1000)
        y = y0[:, : sum(widths)].clone()
        wrapper.add_lora_linear(y, x, a_slices, b_slices, 0.5, widths)
        layer[name, prefill] = y
one = GroupedPunicaWrapperCPU(64, 8, "cpu")  # a step on one adapter: the plain path, no row selection
one.update_metadata(LoRAMapping((30,) * 8, (30,) * 8), [10, 20, 30], slots, 1000)
y_one, y_one_stock = y0[:, : sum(widths)].clone(), y0[:, : sum(widths)].clone()
one.add_lora_linear(y_one, x, a_slices, b_slices, 1.0, widths)
stock_one = PunicaWrapperCPU(64, 8, "cpu")
stock_one.update_metadata(LoRAMapping((30,) * 8, (30,) * 8), [10, 20, 30], slots, 1000)
stock_one.add_lora_linear(y_one_stock, x, a_slices, b_slices, 1.0, widths)
untouched = y0[:, : sum(widths)][~adapted]

print(json.dumps({
    "layer_adapted": all(
        torch.allclose(layer["ours", p][adapted], layer["stock", p][adapted], atol=1e-4) for p in (False, True)
    ),
    "layer_unadapted_untouched": all(torch.equal(layer["ours", p][~adapted], untouched) for p in (False, True)),
    "layer_one_adapter": torch.allclose(y_one, y_one_stock, atol=1e-4),
    "groups": [[slot, None if rows is None else rows.tolist()] for slot, rows in groups],
    "one_group": [[slot, rows] for slot, rows in slot_groups(torch.tensor([2, 2, 2]))],
    "shrink_adapted": torch.allclose(ours[adapted], reference[adapted], atol=1e-5),
    "shrink_unadapted_zero": bool((ours[~adapted] == 0).all()),
    "expand_slice_adapted": torch.allclose(ours_y[adapted], reference_y[adapted], atol=1e-4),
    "expand_slice_unadapted_untouched": torch.equal(ours_y[~adapted], y0[~adapted]),
    "reference_touches_unadapted": not torch.equal(reference_y[~adapted], y0[~adapted]),
    "expand_adapted": torch.allclose(plain[adapted], reference_plain[adapted], atol=1e-4),
    "expand_unadapted_untouched": torch.equal(plain[~adapted], y0[~adapted][:, :features_out]),
}))
"""

PLATFORM_CHECK = r"""
import json
from vllm.lora.punica_wrapper.punica_selector import get_punica_wrapper
from vllm.platforms import current_platform
wrapper = get_punica_wrapper(64, 8, "cpu")
print(json.dumps({"platform": type(current_platform).__name__, "wrapper": type(wrapper).__name__}))
"""


def _run(script: str, **env: str) -> dict:
    result = subprocess.run(
        [str(VLLM_PYTHON), "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VLLM_NO_USAGE_STATS": "1", **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_grouped_products_equal_vllms_reference_ops_and_skip_tokens_without_an_adapter():
    found = _run(OPS_CHECK)
    assert found.pop("groups") == [[-1, [2, 5]], [0, [3, 6]], [1, [0, 1, 7]], [2, [4]]]
    assert found.pop("one_group") == [[2, None]]  # one adapter in the step: no row selection at all
    assert found.pop("reference_touches_unadapted")  # vLLM's ops add the last slot's product to -1 rows
    # (the mapping of the layer check puts slot -1 where the ops check does: ids 0 are rows 2 and 5)
    assert found == dict.fromkeys(found, True)


def test_the_platform_plugin_picks_the_grouped_wrapper_on_cpu_and_vllm_plugins_turns_it_off():
    assert _run(PLATFORM_CHECK) == {"platform": "CpuPlatformWithGroupedLora", "wrapper": "GroupedPunicaWrapperCPU"}
    assert _run(PLATFORM_CHECK, VLLM_PLUGINS="") == {"platform": "CpuPlatform", "wrapper": "PunicaWrapperCPU"}
