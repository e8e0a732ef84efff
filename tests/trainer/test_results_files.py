"""What a person reads after training: the loss-curve picture, the human-evaluation sheet (quoted so any answer
reads back, base answers from the same model with its adapter off), the card that shows both, and the size-capped
copy of them for the report ConfigMap (`kubetune results`)."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from kubetune.api.runtime import HUMAN_EVAL_FILE, LOSS_CURVES_FILE, METRICS_FILE, MODEL_CARD_FILE
from kubetune_trainer.generation_eval import greedy_answer
from kubetune_trainer.human_eval import COLUMNS, pick_rows, write_human_eval
from kubetune_trainer.loss_curves import draw_loss_curves, loss_points
from kubetune_trainer.results_report import cut_sheet, result_key, results_patch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY = [
    {"loss": 2.5, "step": 1},
    {"loss": 2.0, "step": 5},
    {"eval_loss": 2.1, "step": 5},
    {"loss": float("nan"), "step": 8},
    {"loss": 1.2, "step": 10},
    {"eval_loss": 1.5, "step": 10},
    {"train_loss": 1.9, "step": 10},  # the end-of-run summary is no point of the curve
]
# Commas, quotes, newlines, a lone carriage return and Hangul: each must survive a CSV round trip.
AWKWARD = [
    {"prompt": 'Say "hi", then stop.\nNow!', "completion": 'He said "hi",\r\nthen left'},
    {"prompt": "감정을 말하세요: 좋아요, 정말로", "completion": "positive"},
    {"prompt": "a,b,c\rd", "completion": '""'},
    {"prompt": "plain", "completion": "answer"},
    {"prompt": [{"role": "user", "content": "Hello, chat"}], "completion": [{"role": "assistant", "content": "Hi"}]},
]


def _png_ok(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size == (700, 400)


def test_the_loss_curves_are_a_png_of_train_and_eval_loss(tmp_path: Path):
    curves = loss_points(HISTORY)
    assert curves.train == [(1, 2.5), (5, 2.0), (10, 1.2)]
    assert curves.eval == [(5, 2.1), (10, 1.5)]
    assert draw_loss_curves(HISTORY, tmp_path / LOSS_CURVES_FILE)
    _png_ok(tmp_path / LOSS_CURVES_FILE)
    assert [p.name for p in tmp_path.iterdir()] == [LOSS_CURVES_FILE], "no temporary file is left"


def test_a_mix_draws_each_sources_eval_loss_beside_the_overall_one(tmp_path: Path):
    history = [*HISTORY, {"eval_medical_loss": 1.7, "eval_chat_loss": 1.3, "eval_runtime": 2.0, "step": 10}]
    curves = loss_points(history)
    assert curves.sources == {"medical": [(10, 1.7)], "chat": [(10, 1.3)]}
    assert curves.eval == [(5, 2.1), (10, 1.5)]
    assert draw_loss_curves(history, tmp_path / "mix.png")
    _png_ok(tmp_path / "mix.png")


def test_a_run_without_evaluation_still_draws_its_train_curve(tmp_path: Path):
    train_only = [entry for entry in HISTORY if "eval_loss" not in entry]
    assert draw_loss_curves(train_only, tmp_path / "train.png")
    _png_ok(tmp_path / "train.png")
    assert not draw_loss_curves([{"train_loss": 1.0, "step": 3}], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """The tiny model with a LoRA adapter whose weights are not zero (so adapter-on and adapter-off answer apart),
    its tokenizer, and a loader of the untouched base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.support.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), config)
    return peft_model, tokenizer, lambda: AutoModelForCausalLM.from_pretrained(folder)


def _read_sheet(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_sheet_reads_back_with_base_and_adapter_answers(tiny_pair, tmp_path: Path):
    model, tokenizer, load_base = tiny_pair
    rows = Dataset.from_list(AWKWARD[:4])
    path = tmp_path / HUMAN_EVAL_FILE
    sheet = write_human_eval(model, tokenizer, rows, samples=4, max_new_tokens=6, seed=7, path=path)
    assert sheet is not None and sheet.rows == 4
    records = _read_sheet(path)
    assert tuple(records[0]) == COLUMNS
    chosen = pick_rows(rows, 4, seed=7)
    base = load_base()
    for record, row in zip(records, chosen, strict=True):
        assert record["prompt"] == row["prompt"] and record["reference"] == row["completion"].strip()
        assert record["rating"] == "" and record["comment"] == ""
        assert record["finetuned_answer"] == greedy_answer(model, tokenizer, row, 6)
        assert record["base_answer"] == greedy_answer(base, tokenizer, row, 6), "the adapter was switched off"
    assert any(r["base_answer"] != r["finetuned_answer"] for r in records), "adapter-on and -off answer apart"
    assert [r["id"] for r in records] == ["1", "2", "3", "4"]


def test_rows_are_chosen_by_seed_and_a_full_model_compares_with_the_loaded_base(tiny_pair, tmp_path: Path):
    _, tokenizer, load_base = tiny_pair
    rows = Dataset.from_list([{"prompt": f"question {n}", "completion": f"answer {n}"} for n in range(20)])
    assert pick_rows(rows, 5, 1)["prompt"] == pick_rows(rows, 5, 1)["prompt"]
    assert pick_rows(rows, 5, 1)["prompt"] != pick_rows(rows, 5, 2)["prompt"]
    full = load_base()  # a model without an adapter: the base answers come from `load_base`
    with torch.no_grad():
        for parameter in full.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    loads: list[int] = []

    def counted_base():
        loads.append(1)
        return load_base()

    path = tmp_path / "full.csv"
    write_human_eval(full, tokenizer, rows, samples=3, max_new_tokens=5, seed=1, path=path, load_base=counted_base)
    records = _read_sheet(path)
    base = load_base()
    assert loads == [1]
    for record, row in zip(records, pick_rows(rows, 3, 1), strict=True):
        assert record["base_answer"] == greedy_answer(base, tokenizer, row, 5)
        assert record["finetuned_answer"] == greedy_answer(full, tokenizer, row, 5)


def test_chat_prompts_are_shown_as_messages_and_nothing_is_written_when_off(tiny_pair, tmp_path: Path):
    model, tokenizer, _ = tiny_pair
    rows = Dataset.from_list([AWKWARD[4]])
    path = tmp_path / HUMAN_EVAL_FILE
    write_human_eval(model, tokenizer, rows, samples=3, max_new_tokens=3, seed=0, path=path)
    [record] = _read_sheet(path)
    assert record["prompt"] == "user: Hello, chat" and record["reference"] == "Hi"
    for samples, data in ((0, rows), (2, None), (2, Dataset.from_list([{"text": "plain text row"}]))):
        off = tmp_path / f"off-{samples}.csv"
        assert write_human_eval(model, tokenizer, data, samples=samples, max_new_tokens=3, seed=0, path=off) is None
        assert not off.exists()


def _sheet_bytes(rows: list[list[str]]) -> bytes:
    text = io.StringIO(newline="")
    csv.writer(text).writerows([list(COLUMNS), *rows])
    return text.getvalue().encode()


def test_the_report_patch_carries_the_files_and_cuts_the_sheet_to_the_budget(tmp_path: Path):
    (tmp_path / MODEL_CARD_FILE).write_text("# card\n", encoding="utf-8")
    (tmp_path / METRICS_FILE).write_text('{"evalLoss": 1.0}\n', encoding="utf-8")
    picture = PNG_MAGIC + bytes(range(256)) * 4
    (tmp_path / LOSS_CURVES_FILE).write_bytes(picture)
    rows = [[str(n), f'prompt "{n}",\nline two', "ref", "base", "tuned", "", ""] for n in range(1, 101)]
    sheet = _sheet_bytes(rows)
    (tmp_path / HUMAN_EVAL_FILE).write_bytes(sheet)
    files = {name: tmp_path / name for name in (MODEL_CARD_FILE, METRICS_FILE, LOSS_CURVES_FILE, HUMAN_EVAL_FILE)}

    whole = results_patch(files)
    assert whole["data"][result_key(HUMAN_EVAL_FILE)].encode() == sheet
    assert base64.b64decode(whole["binaryData"][result_key(LOSS_CURVES_FILE)]) == picture
    assert whole["data"][result_key(MODEL_CARD_FILE)] == "# card\n"

    fixed = len("# card\n") + len('{"evalLoss": 1.0}\n') + len(picture)
    budget = fixed + len(sheet) // 2
    cut = results_patch(files, budget=budget)
    text = cut["data"][result_key(HUMAN_EVAL_FILE)]
    kept = list(csv.reader(io.StringIO(text, newline="")))
    assert kept[0] == list(COLUMNS) and 0 < len(kept) - 1 < 100
    assert kept[1:] == rows[: len(kept) - 1], "whole records, in order, quoting intact"
    assert sum(len(value.encode()) for key, value in cut["data"].items() if key != "results") + len(picture) <= budget
    entry = json.loads(cut["data"]["results"])["files"][HUMAN_EVAL_FILE]
    assert entry["rows"] == 100 and entry["rowsIncluded"] == len(kept) - 1
    assert entry["volumePath"] == str(tmp_path / HUMAN_EVAL_FILE)


def test_files_not_written_are_removed_and_oversized_ones_only_indexed(tmp_path: Path):
    (tmp_path / MODEL_CARD_FILE).write_text("x" * 100, encoding="utf-8")
    files = {MODEL_CARD_FILE: tmp_path / MODEL_CARD_FILE, HUMAN_EVAL_FILE: tmp_path / "missing.csv"}
    patch = results_patch(files, budget=50)
    assert patch["binaryData"] == {result_key(LOSS_CURVES_FILE): None}
    assert patch["data"][result_key(HUMAN_EVAL_FILE)] is None and patch["data"][result_key(MODEL_CARD_FILE)] is None
    index = json.loads(patch["data"]["results"])["files"]
    assert index == {MODEL_CARD_FILE: {"volumePath": str(tmp_path / MODEL_CARD_FILE), "leftOutBytes": 100}}
    assert cut_sheet(b"", 10).rows == 0


def test_an_answer_cut_inside_a_character_loses_the_partial_character():
    """maxNewTokens can stop inside a Hangul syllable's byte tokens: the sheet shows 아마, not 아마\ufffd."""
    from transformers import BatchEncoding

    class Tokenizer:
        pad_token_id = eos_token_id = 0

        def __call__(self, text: str, **_) -> BatchEncoding:
            return BatchEncoding({"input_ids": torch.tensor([[1, 2]])})

        def decode(self, ids, **_) -> str:
            return " 아마\ufffd" if len(ids) == 2 else " 아마 \ufffd\ufffd"

    class Model(torch.nn.Module):
        def __init__(self, tokens: int) -> None:
            super().__init__()
            self.weight, self.tokens = torch.nn.Parameter(torch.zeros(1)), tokens

        def generate(self, **_) -> torch.Tensor:
            return torch.ones(1, 2 + self.tokens, dtype=torch.long)

    assert greedy_answer(Model(2), Tokenizer(), {"prompt": "p"}, 2) == "아마"
    assert greedy_answer(Model(3), Tokenizer(), {"prompt": "p"}, 3) == "아마"
