"""Small pieces of the server: stop strings and partial characters, batch merging, sampling, base identities."""

from __future__ import annotations

import json

import pytest
import torch
from kubetune.api import ModelSource
from kubetune_server.batch import BatchState, keep_rows, left_pad, merge
from kubetune_server.detokenize import TextProgress
from kubetune_server.errors import AdapterLoadError
from kubetune_server.loader import check_adapter_base, locate_base_model
from kubetune_server.sampling import SamplingParams, choose_next_tokens, make_generator, sampling_probabilities


def test_text_waits_for_a_possible_stop_string_and_cuts_at_it():
    progress = TextProgress(stop=("END",))
    assert progress.advance("hello E", final=False) == "hello "
    assert progress.advance("hello EN", final=False) == ""
    assert progress.advance("hello ENx", final=False) == "ENx"  # it was not the stop string after all
    assert progress.advance("hello ENx and END more", final=False) == " and "
    assert progress.stopped_by_string


def test_text_holds_back_an_incomplete_character_until_final():
    progress = TextProgress(stop=())
    assert progress.advance("caf\ufffd", final=False) == "caf"
    assert progress.advance("café", final=False) == "é"
    assert progress.advance("café!", final=True) == "!"
    assert not progress.stopped_by_string


class _Layer:
    def __init__(self, keys: torch.Tensor) -> None:
        self.keys, self.values = keys, keys.clone()


class _Cache:
    def __init__(self, lengths: list[int], width: int) -> None:
        keys = torch.zeros(len(lengths), 1, width, 1)
        for row, length in enumerate(lengths):
            keys[row, 0, width - length :, 0] = torch.arange(1, length + 1, dtype=torch.float)
        self.layers = [_Layer(keys)]


def _state(lengths: list[int]) -> BatchState:
    width = max(lengths)
    _, mask = left_pad([[1] * n for n in lengths], 0, "cpu")
    return BatchState(_Cache(lengths, width), mask, torch.tensor(lengths), torch.tensor([7] * len(lengths)))


def test_merging_left_pads_the_shorter_cache_and_keeps_rows_aligned():
    merged = merge(_state([2, 3]), _state([5]))
    assert merged.attention_mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    keys = merged.cache.layers[0].keys[:, 0, :, 0]
    assert keys.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [1, 2, 3, 4, 5]]
    assert merged.next_positions.tolist() == [2, 3, 5]


def test_dropping_rows_trims_columns_that_are_padding_for_everyone_left():
    state = keep_rows(merge(_state([2, 3]), _state([5])), [0, 1])
    assert state.attention_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert state.cache.layers[0].keys[:, 0, :, 0].tolist() == [[0, 1, 2], [1, 2, 3]]
    assert keep_rows(state, []) is None


def test_top_p_keeps_the_smallest_set_reaching_the_mass_and_always_the_best_token():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.9, 0.05, 0.03, 0.02]]))
    probabilities = sampling_probabilities(logits, torch.tensor([1.0, 1.0]), torch.tensor([0.7, 0.5]))
    assert (probabilities[0] > 0).tolist() == [True, True, False, False]
    assert (probabilities[1] > 0).tolist() == [True, False, False, False]
    assert torch.allclose(probabilities.sum(dim=-1), torch.ones(2))


def test_greedy_rows_take_the_argmax_and_seeded_rows_repeat():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(max_tokens=1), SamplingParams(max_tokens=1, temperature=1.0, seed=5)] * 2
    first = choose_next_tokens(logits.repeat(2, 1)[:4], params, [make_generator(p) for p in params])
    again = choose_next_tokens(logits.repeat(2, 1)[:4], params, [make_generator(p) for p in params])
    assert first[0] == int(torch.argmax(logits[0]))
    assert first == again


def _adapter(folder, base: str | None):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    return str(folder)


def test_an_adapter_recorded_under_another_mount_root_still_matches_its_base(tmp_path):
    source = ModelSource.model_validate({"pvc": {"claimName": "models", "path": "llama"}})
    base = locate_base_model(source, root=str(tmp_path))
    trained_in_pod = _adapter(tmp_path / "a", "/mnt/kubetune/pvc/models/llama")
    check_adapter_base("a", trained_in_pod, base, ignore_mismatch=False, root=str(tmp_path))
    local = _adapter(tmp_path / "b", f"{tmp_path}/models/llama/")
    check_adapter_base("b", local, base, ignore_mismatch=False, root=str(tmp_path))
    other = _adapter(tmp_path / "c", "/mnt/kubetune/pvc/models/mistral")
    with pytest.raises(AdapterLoadError, match="mistral"):
        check_adapter_base("c", other, base, ignore_mismatch=False, root=str(tmp_path))


def test_hub_ids_compare_by_name(tmp_path):
    base = locate_base_model(ModelSource.model_validate({"name": "org/model"}))
    check_adapter_base("a", _adapter(tmp_path / "a", "org/model"), base, ignore_mismatch=False)
    check_adapter_base("n", _adapter(tmp_path / "n", None), base, ignore_mismatch=False)  # unknown: served, warned
    with pytest.raises(AdapterLoadError, match="org/other"):
        check_adapter_base("b", _adapter(tmp_path / "b", "org/other"), base, ignore_mismatch=False)


def test_a_vanishing_temperature_is_greedy_instead_of_overflowing():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    params = [SamplingParams(max_tokens=1, temperature=5e-324, top_p=0.5)]
    assert choose_next_tokens(logits, params, [make_generator(params[0])]) == [1]


def test_the_lean_lora_forward_gives_exactly_what_peft_gives(pvc_root):
    from kubetune_server.adapters import BASE_ROW, AdapterSet, AdapterSource
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, a_dir, b_dir = (
        pvc_root / "models" / "base",
        pvc_root / "adapters" / "facts-a",
        pvc_root / "adapters" / "facts-b",
    )
    served = AdapterSet(AutoModelForCausalLM.from_pretrained(base_dir))
    served.add(AdapterSource("a", str(a_dir)))
    served.add(AdapterSource("b", str(b_dir)))
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), a_dir, adapter_name="a")
    reference.load_adapter(b_dir, adapter_name="b")
    reference.eval()
    ids = torch.tensor([[5, 9, 14, 20, 33], [7, 8, 9, 10, 11]])
    with torch.inference_mode():
        for rows in (["a--v1", "a--v1"], ["b--v2", "b--v2"], ["a--v1", BASE_ROW], [BASE_ROW, BASE_ROW]):
            served.route(rows)
            ours = served.model(input_ids=ids).logits
            names = [row.split("--")[0] if row != BASE_ROW else row for row in rows]
            theirs = reference(input_ids=ids, adapter_names=names).logits
            assert torch.equal(ours, theirs), rows
        served.route(["a--v1", "a--v1"])
        with reference.disable_adapter():
            bare = reference(input_ids=ids).logits
        assert not torch.equal(served.model(input_ids=ids).logits, bare)  # the adapter really contributes


def test_settings_read_the_drain_time():
    from kubetune_server.settings import ServerSettings

    assert ServerSettings.from_env({"KUBETUNE_DRAIN_SECONDS": "45"}).drain_timeout_s == 45
    with pytest.raises(ValueError, match="KUBETUNE_DRAIN_SECONDS"):
        ServerSettings.from_env({"KUBETUNE_DRAIN_SECONDS": "soon"})


def test_kv_budget_from_the_model_shape_and_free_memory():
    from kubetune_server.kv_budget import gpu_kv_budget, kv_bytes_per_token, tokens_for_memory

    llama_7b = {"num_attention_heads": 32, "num_key_value_heads": 32, "hidden_size": 4096, "num_hidden_layers": 32}
    assert kv_bytes_per_token(llama_7b, torch.float16) == 512 * 1024  # the well-known 0.5 MiB per token
    gqa = {**llama_7b, "num_key_value_heads": 8, "head_dim": 128}
    assert kv_bytes_per_token(gqa, torch.bfloat16) == 128 * 1024
    assert tokens_for_memory(10 * 2**30, 512 * 1024) == 16384  # 80% of 10 GiB at 0.5 MiB a token
    assert gpu_kv_budget(torch.nn.Linear(1, 1), "cpu") is None  # CPU memory is not measured
