"""Data a user gets wrong: each stops the trainer with exit 64 (InvalidInput, not retried), a message that says
what to fix, and no traceback; rows that maxSeqLength cuts or drops are counted, never lost silently."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset
from kubetune.api import FineTuneJobSpec
from kubetune.api.runtime import ADAPTER_DIR, METRICS_FILE
from kubetune_trainer.configs import build_configs
from kubetune_trainer.data_formats import format_rows
from kubetune_trainer.data_sources import load_files
from kubetune_trainer.device import DeviceInfo
from kubetune_trainer.errors import InvalidInputError
from kubetune_trainer.model_loading import ModelLocation, load_model, load_tokenizer
from kubetune_trainer.sft_trainer import LengthReport, build_trainer

from tests.trainer.helpers import base_spec, run_in_process, write_spec

KOREAN_ROWS = [
    {"instruction": "문장의 감정을 분류하세요.", "input": f"정말 좋은 영화 {number}", "output": "긍정"}
    for number in range(6)
]
SHORT_ROWS = [{"instruction": f"Capital of country {n}?", "output": f"City {n}"} for n in range(10)]
# ~600 bytes of prompt: far beyond maxSeqLength 32 on the tiny byte-level tokenizer, so nothing of the answer is left.
LONG_ROWS = [
    {"instruction": f"Question {n}: " + "please read all of this " * 25, "output": f"Answer {n}"} for n in range(8)
]
CUT_ROWS = [{"instruction": f"Q{n}", "output": f"A long answer number {n} " + "and more words " * 8} for n in range(4)]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def run_trainer(pvc_root: Path, tmp_path: Path, caplog, name: str, content: bytes, **spec_change) -> tuple[int, dict]:
    """Write `content` as data file `name`, run the trainer's entrypoint on it; exit code and termination message.
    Asserts that no log record carries a traceback."""
    (pvc_root / "data" / name).write_bytes(content)
    dataset = {"pvc": {"claimName": "data", "path": name}, "evalFraction": 0.2, **spec_change.pop("dataset", {})}
    spec = base_spec(dataset=dataset, **spec_change)
    with caplog.at_level(logging.INFO):
        code = run_in_process(write_spec(tmp_path, spec), tmp_path / "output", pvc_root)
    assert not [record for record in caplog.records if record.exc_info], "a traceback reached the log"
    return code, json.loads((tmp_path / "termination-log").read_text())


def test_a_cp949_file_names_the_file_and_the_iconv_fix(pvc_root: Path, tmp_path: Path, caplog):
    code, summary = run_trainer(pvc_root, tmp_path, caplog, "excel.jsonl", jsonl(KOREAN_ROWS).encode("cp949"))
    assert code == 64 and summary["exitReason"] == "InvalidInput"
    message = summary["message"]
    assert "excel.jsonl is not UTF-8" in message and "line 1" in message and "CP949" in message
    assert "iconv -f cp949 -t utf-8 excel.jsonl > excel.utf8.jsonl" in message
    assert not (tmp_path / "output" / ADAPTER_DIR).exists()


def test_a_cp949_csv_deep_in_the_file_names_its_line(tmp_path: Path):
    lines = ["instruction,input,output", "classify,fine,ok"] + [f"분류,좋은 영화 {n},긍정" for n in range(3)]
    path = tmp_path / "excel.csv"
    path.write_bytes("\n".join(lines[:2]).encode() + b"\n" + "\n".join(lines[2:]).encode("cp949") + b"\n")
    with pytest.raises(InvalidInputError, match=r"excel.csv is not UTF-8 text \(byte offset \d+, line 3\)") as error:
        load_files(path, "dataset.pvc")
    assert "iconv -f cp949 -t utf-8 excel.csv > excel.utf8.csv" in str(error.value)
    assert 'save it from Excel as "CSV UTF-8"' in str(error.value)


def test_utf8_korean_data_is_read_unchanged(tmp_path: Path):
    path = tmp_path / "korean.jsonl"
    path.write_text(jsonl(KOREAN_ROWS), encoding="utf-8")
    assert load_files(path, "dataset.pvc")[0] == KOREAN_ROWS[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (jsonl(SHORT_ROWS[:2]) + '{"instruction": "a", "output": \n' + jsonl(SHORT_ROWS[2:4]), "bad.jsonl line 3 is"),
        (jsonl(SHORT_ROWS[:4]) + "[1, 2]\n", "bad.jsonl line 5 is not a JSON object"),
    ],
)
def test_a_malformed_jsonl_line_is_named_by_its_number(pvc_root: Path, tmp_path: Path, caplog, content, message):
    code, summary = run_trainer(pvc_root, tmp_path, caplog, "bad.jsonl", content.encode())
    assert code == 64 and message in summary["message"]


def test_no_training_row_left_after_max_seq_length_fails_before_the_model_loads(
    pvc_root: Path, tmp_path: Path, caplog, monkeypatch
):
    loads = []
    monkeypatch.setattr("kubetune_trainer.flow.load_model", lambda *args, **kwargs: loads.append(args))
    code, summary = run_trainer(
        pvc_root, tmp_path, caplog, "long.jsonl", jsonl(LONG_ROWS).encode(), training={"maxSeqLength": 32}
    )
    assert code == 64 and summary["exitReason"] == "InvalidInput"
    message = summary["message"]
    assert "no training row is left: all 6 are cut by training.maxSeqLength=32 before their answer" in message
    assert "raise training.maxSeqLength" in message
    assert loads == [], "failed before loading the base model"


@pytest.mark.parametrize(
    "layout", [{}, {"paddingFree": True}, {"packing": True}], ids=["padded", "padding-free", "packed"]
)
def test_no_evaluation_row_left_fails_and_cut_rows_are_counted(tiny_model_dir: Path, tmp_path: Path, layout: dict):
    # With the alpaca template on the tiny tokenizer: short rows 34 tokens, cut rows 90 (prompt 12), long rows 450.
    train = format_rows(Dataset.from_list(SHORT_ROWS + CUT_ROWS + LONG_ROWS[:1]), "alpaca").dataset
    held_out = format_rows(Dataset.from_list(LONG_ROWS[:2]), "alpaca").dataset
    spec = FineTuneJobSpec.model_validate(base_spec(training={"maxSeqLength": 48, **layout}))
    location = ModelLocation(str(tiny_model_dir), None, False)
    tokenizer = load_tokenizer(location)

    def build(evaluation: Dataset | None):
        has_eval = evaluation is not None
        configs = build_configs(spec, checkpoints_dir=tmp_path, device=DeviceInfo(kind="cpu"), has_eval=has_eval)
        model = load_model(location, "fp32", DeviceInfo(kind="cpu"), None, gradient_checkpointing=False)
        return build_trainer(model, tokenizer, configs, train, evaluation, [], 48)

    with pytest.raises(
        InvalidInputError, match=r"no evaluation row is left: all 2 are cut by training\.maxSeqLength=48"
    ):
        build(held_out)
    trainer = build(None)
    assert trainer.length_reports["train"] == LengthReport(rows=15, cut=4, dropped=1, longest=450)
    if not layout.get("packing"):
        assert len(trainer.train_dataset) == 14
        assert max(len(row["input_ids"]) for row in trainer.train_dataset) == 48


def test_rows_cut_and_dropped_by_max_seq_length_are_counted_everywhere(
    pvc_root: Path, tmp_path: Path, caplog, monkeypatch
):
    from kubetune_trainer.sft_trainer import KubetuneSFTTrainer

    evaluations = []
    original = KubetuneSFTTrainer.evaluate
    monkeypatch.setattr(
        KubetuneSFTTrainer, "evaluate", lambda self, *a, **k: evaluations.append(1) or original(self, *a, **k)
    )
    rows = SHORT_ROWS + CUT_ROWS + LONG_ROWS[:2]
    code, summary = run_trainer(
        pvc_root,
        tmp_path,
        caplog,
        "mixed.jsonl",
        jsonl(rows).encode(),
        dataset={"evalFraction": 0.0},
        training={"maxSeqLength": 48, "maxSteps": 2, "batchSize": 4},
    )
    assert code == 0, summary
    assert summary["metrics"]["truncatedRows"] == 4 and summary["metrics"]["droppedRows"] == 2
    adapter = tmp_path / "output" / ADAPTER_DIR
    metrics = json.loads((adapter / METRICS_FILE).read_text())
    assert metrics["truncatedRows"] == 4 and metrics["droppedRows"] == 2
    card = (adapter / "README.md").read_text()
    assert "14 training rows" in card
    assert "Rows longer than maxSeqLength 48: training: 4 cut, 2 dropped (prompt alone too long)." in card
    assert not (adapter / "training_args.bin").exists(), "a pickle is never published"
    assert evaluations == []  # no evaluation rows: nothing evaluated


def test_the_final_evaluation_runs_once(pvc_root: Path, tmp_path: Path, caplog, monkeypatch):
    from kubetune_trainer.sft_trainer import KubetuneSFTTrainer

    calls = []
    original = KubetuneSFTTrainer.evaluate
    monkeypatch.setattr(
        KubetuneSFTTrainer, "evaluate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    code, summary = run_trainer(
        pvc_root,
        tmp_path,
        caplog,
        "short.jsonl",
        jsonl(SHORT_ROWS).encode(),
        dataset={"evalFraction": 0.2},
        training={"maxSteps": 2, "batchSize": 4, "evalSteps": 2},
    )
    assert code == 0, summary
    assert len(calls) == 1 and summary["metrics"]["evalLoss"] > 0
    card = (tmp_path / "output" / ADAPTER_DIR / "README.md").read_text()
    assert "| Epochs / max steps | 1.00 (of 3 planned) / 2 |" in card


def test_prompts_are_checked_until_one_fits(tiny_model_dir: Path):
    from kubetune_trainer.sft_trainer import check_prompts_fit

    tokenizer = load_tokenizer(ModelLocation(str(tiny_model_dir), None, False))
    long_rows = format_rows(Dataset.from_list(LONG_ROWS[:2]), "alpaca").dataset
    with pytest.raises(InvalidInputError, match=r"no evaluation row is left: all 2 .* shortest prompt has 443 tokens"):
        check_prompts_fit("eval", long_rows, tokenizer, 48)
    mixed = format_rows(Dataset.from_list(LONG_ROWS[:2] + SHORT_ROWS[:1]), "alpaca").dataset
    check_prompts_fit("train", mixed, tokenizer, 48)  # one row has room for its answer: trl trains on it
    check_prompts_fit("eval", None, tokenizer, 48)
