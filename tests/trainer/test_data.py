"""Data formats, auto-detection, bad rows, splits and every source kind (volume, ConfigMap, https, Hub)."""

from __future__ import annotations

import json
import os
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from datasets import Dataset
from kubetune.api import DatasetSpec
from kubetune.api.runtime import ENV_CONFIGMAP_ROOT, ENV_PVC_ROOT
from kubetune_trainer import data_sources
from kubetune_trainer.data import prepare_data
from kubetune_trainer.data_formats import (
    ALPACA_TEMPLATE,
    ALPACA_TEMPLATE_NO_INPUT,
    QA_TEMPLATE,
    detect_format,
    every_assistant_turn,
    fingerprint,
    format_rows,
    limit_rows,
    split_for_eval,
)
from kubetune_trainer.data_sources import load_raw_data
from kubetune_trainer.errors import InvalidInputError, TrainerFailure

from tests.support.https import https_server as serving_https
from tests.trainer.helpers import allow_loopback

ALPACA = [
    {"instruction": "Classify", "input": "great film", "output": "positive"},
    {"instruction": "Say hi", "input": "", "output": "hi"},
]
REPO = Path(__file__).resolve().parents[2]
CHAT = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Delivery time?"},
            {"role": "assistant", "content": "Two days."},
        ]
    }
]


def rows(items: list[dict]) -> Dataset:
    return Dataset.from_list(items)


# --- formats -------------------------------------------------------------------------------------------


def test_alpaca_rows_become_prompt_completion_with_and_without_input():
    data = format_rows(rows(ALPACA), "alpaca")
    first, second = data.dataset[0], data.dataset[1]
    assert first == {
        "prompt": ALPACA_TEMPLATE.format(instruction="Classify", input="great film"),
        "completion": "positive",
    }
    assert second["prompt"] == ALPACA_TEMPLATE_NO_INPUT.format(instruction="Say hi")
    assert data.format == "alpaca" and data.skipped_rows == 0


def test_qa_rows_use_the_instruction_layout_or_a_custom_template():
    qa = rows([{"question": "Symptoms of flu?", "answer": "Fever."}])
    assert format_rows(qa, "qa").dataset[0] == {
        "prompt": QA_TEMPLATE.format(question="Symptoms of flu?"),
        "completion": "Fever.",
    }
    custom = format_rows(qa, "qa", "### 질문:\n{question}\n\n### 답변:\n").dataset[0]
    assert custom["prompt"] == "### 질문:\nSymptoms of flu?\n\n### 답변:\n"


def test_chat_rows_train_the_last_assistant_message():
    data = format_rows(rows(CHAT), "chat").dataset[0]
    assert data["prompt"] == CHAT[0]["messages"][:2]
    assert data["completion"] == [{"role": "assistant", "content": "Two days."}]


def test_every_assistant_turn_of_a_conversation_is_a_training_row():
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Delivery time?"},
        {"role": "assistant", "content": "Two days."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You are welcome."},
    ]
    formatted = format_rows(rows([{"messages": conversation}]), "chat").dataset
    expanded = every_assistant_turn(formatted)
    assert [row["completion"] for row in expanded] == [[conversation[2]], [conversation[4]]]
    assert [row["prompt"] for row in expanded] == [conversation[:2], conversation[:4]]


def test_the_bundled_chat_data_trains_all_108_assistant_turns(volume: Path):
    bundled = REPO / "examples" / "data" / "support-chat-ko.jsonl"
    write_jsonl(volume / "cm" / "chat" / "train.jsonl", [json.loads(line) for line in bundled.read_text().splitlines()])
    spec = DatasetSpec.model_validate({"configMap": {"name": "chat", "key": "train.jsonl"}, "evalFraction": 0.1})
    data = prepare_data(spec, seed=1)
    assert len(data.train) + len(data.eval) == 108, "72 conversations, 36 of them with a second assistant turn"
    assert len(data.eval) >= 7, "the 7 held-out conversations, split before their turns are"
    last_only = prepare_data(spec, seed=1, all_assistant_turns=False)
    assert len(last_only.train) + len(last_only.eval) == 72


def test_text_rows_pass_through():
    assert format_rows(rows([{"text": "hello world"}]), "text").dataset[0] == {"text": "hello world"}


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["messages"], "chat"),
        (["instruction", "input", "output"], "alpaca"),
        (["instruction", "output", "extra"], "alpaca"),
        (["question", "answer"], "qa"),
        (["text", "id"], "text"),
    ],
)
def test_format_is_detected_from_columns(columns, expected):
    assert detect_format(columns) == expected


def test_undetectable_columns_are_listed_in_the_error():
    with pytest.raises(InvalidInputError, match=r"cannot tell the format from the columns \['label', 'sentence'\]"):
        format_rows(rows([{"sentence": "x", "label": 1}]), None)


def test_missing_column_for_the_given_format():
    with pytest.raises(
        InvalidInputError, match=r"format alpaca: column\(s\) \['output'\] missing; .*\['instruction'\]"
    ):
        format_rows(rows([{"instruction": "x"}]), "alpaca")


def test_empty_dataset_is_an_error():
    with pytest.raises(InvalidInputError, match="dataset is empty"):
        format_rows(Dataset.from_dict({"text": []}), None)


BAD = [
    {"instruction": "ok", "input": "", "output": "fine"},
    {"instruction": "no answer", "input": "", "output": ""},
    {"instruction": "  ", "input": "", "output": "x"},
]


def test_a_bad_row_names_its_number_and_field():
    with pytest.raises(
        InvalidInputError, match=r"row 2 does not fit format alpaca: field 'output' is missing or empty"
    ):
        format_rows(rows(BAD), "alpaca")


def test_bad_rows_are_skipped_and_counted_when_allowed():
    data = format_rows(rows(BAD), "alpaca", skip_invalid=True)
    assert len(data.dataset) == 1 and data.skipped_rows == 2
    assert data.skipped_examples == (
        "row 2: field 'output' is missing or empty",
        "row 3: field 'instruction' is missing or empty",
    )


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([{"role": "user", "content": "hi"}], "at least two messages"),
        ([{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}], r"messages\[1\].role"),
        ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}], "non-empty assistant message"),
    ],
)
def test_bad_chat_rows(messages, problem):
    with pytest.raises(InvalidInputError, match=problem):
        format_rows(rows([{"messages": messages}]), "chat")


def test_all_rows_bad_is_an_error_even_when_skipping():
    with pytest.raises(InvalidInputError, match="none of its 1 rows fits format qa"):
        format_rows(rows([{"question": "q", "answer": None}]), "qa", skip_invalid=True)


def test_template_with_unknown_placeholder_is_rejected():
    with pytest.raises(
        InvalidInputError, match=r"promptTemplate: unknown placeholder.*'question'.*\{input\}, \{instruction\}"
    ):
        format_rows(rows(ALPACA), "alpaca", "Q: {question}\n")


def test_eval_split_is_seeded_and_disjoint():
    data = Dataset.from_dict({"text": [f"row {i}" for i in range(50)]})
    train, evaluation = split_for_eval(data, 0.1, seed=7)
    again_train, again_eval = split_for_eval(data, 0.1, seed=7)
    assert len(evaluation) == 5 and len(train) == 45
    assert evaluation["text"] == again_eval["text"] and train["text"] == again_train["text"]
    assert not set(train["text"]) & set(evaluation["text"])
    assert split_for_eval(data, 0.0, seed=7) == (data, None)
    assert fingerprint(train, evaluation) == fingerprint(again_train, again_eval) != fingerprint(evaluation, train)


def test_max_samples_caps_training_rows():
    data = Dataset.from_dict({"text": [str(i) for i in range(20)]})
    assert len(limit_rows(data, 5, seed=1)) == 5
    assert limit_rows(data, None, seed=1) is data


# --- sources -------------------------------------------------------------------------------------------


@pytest.fixture
def volume(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv(ENV_PVC_ROOT, str(tmp_path / "pvc"))
    monkeypatch.setenv(ENV_CONFIGMAP_ROOT, str(tmp_path / "cm"))
    return tmp_path


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet"])
def test_file_types_on_a_volume(volume: Path, suffix: str):
    target = volume / "pvc" / "data" / f"train.{suffix}"
    target.parent.mkdir(parents=True)
    frame = Dataset.from_list(ALPACA)
    {
        "jsonl": frame.to_json,
        "json": lambda p: p.write_text(json.dumps(ALPACA)),
        "csv": frame.to_csv,
        "parquet": frame.to_parquet,
    }[suffix](target if suffix == "json" else str(target))
    spec = DatasetSpec.model_validate({"pvc": {"claimName": "data", "path": f"train.{suffix}"}})
    raw = load_raw_data(spec)
    assert len(raw.train) == 2 and raw.train[0]["output"] == "positive"


def test_folder_of_files_on_a_volume(volume: Path):
    write_jsonl(volume / "pvc" / "data" / "set" / "a.jsonl", ALPACA[:1])
    write_jsonl(volume / "pvc" / "data" / "set" / "b.jsonl", ALPACA[1:])
    raw = load_raw_data(DatasetSpec.model_validate({"pvc": {"claimName": "data", "path": "set"}}))
    assert sorted(raw.train["output"]) == ["hi", "positive"]


def test_missing_volume_path_is_a_clear_error(volume: Path):
    with pytest.raises(InvalidInputError, match=r"dataset.pvc: .*pvc/data/nope.jsonl does not exist"):
        load_raw_data(DatasetSpec.model_validate({"pvc": {"claimName": "data", "path": "nope.jsonl"}}))


def test_unsupported_extension(volume: Path):
    (volume / "pvc" / "data").mkdir(parents=True)
    (volume / "pvc" / "data" / "train.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="unsupported extension"):
        load_raw_data(DatasetSpec.model_validate({"pvc": {"claimName": "data", "path": "train.txt"}}))


def test_configmap_file(volume: Path):
    write_jsonl(volume / "cm" / "small-data" / "train.jsonl", CHAT)
    data = prepare_data(DatasetSpec.model_validate({"configMap": {"name": "small-data", "key": "train.jsonl"}}), 1)
    assert data.format == "chat" and data.source == "configmap:small-data/train.jsonl"


def test_hub_dataset_with_named_eval_split(tmp_path: Path, monkeypatch):
    # load_dataset resolves an 'org/name' id to a local folder first; offline, this stands in for the Hub.
    write_jsonl(tmp_path / "acme" / "support" / "train.jsonl", ALPACA * 3)
    write_jsonl(tmp_path / "acme" / "support" / "test.jsonl", ALPACA[:1])
    monkeypatch.chdir(tmp_path)
    spec = DatasetSpec.model_validate({"hf": {"name": "acme/support", "split": "train"}, "evalSplit": "test"})
    data = prepare_data(spec, seed=1)
    assert len(data.train) == 6 and len(data.eval) == 1 and data.source == "hf:acme/support"


def test_unknown_hub_dataset_offline_is_invalid_input(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match=r"dataset.hf: cannot load 'nobody/nothing'"):
        load_raw_data(DatasetSpec.model_validate({"hf": {"name": "nobody/nothing"}}))


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch):
    """A loopback https server with a self-signed certificate trusted through SSL_CERT_FILE."""
    site = tmp_path / "site"
    write_jsonl(site / "train.jsonl", ALPACA)
    with serving_https(tmp_path, partial(SimpleHTTPRequestHandler, directory=str(site))) as (url, certificate):
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
        monkeypatch.setattr(data_sources, "ADDRESS_POLICY", allow_loopback)  # this server is on 127.0.0.1
        yield url


def test_https_url(https_server: str, tmp_path: Path):
    raw = load_raw_data(DatasetSpec.model_validate({"url": f"{https_server}/train.jsonl"}), tmp_path / "dl")
    assert raw.train["output"] == ["positive", "hi"]


def test_https_url_not_found_is_invalid_input(https_server: str, tmp_path: Path):
    with pytest.raises(InvalidInputError, match=r"HTTP 404"):
        load_raw_data(DatasetSpec.model_validate({"url": f"{https_server}/missing.jsonl"}), tmp_path / "dl")


def test_untrusted_certificate_is_a_retryable_failure(https_server: str, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "empty"))
    with pytest.raises(TrainerFailure, match="CERTIFICATE_VERIFY_FAILED") as caught:
        load_raw_data(DatasetSpec.model_validate({"url": f"{https_server}/train.jsonl"}), tmp_path / "dl")
    assert not isinstance(caught.value, InvalidInputError)


def test_prepare_data_reports_skips_and_holds_out_eval_rows(volume: Path):
    write_jsonl(volume / "pvc" / "data" / "t.jsonl", [*ALPACA * 10, *BAD[1:]])
    spec = DatasetSpec.model_validate(
        {"pvc": {"claimName": "data", "path": "t.jsonl"}, "skipInvalidRows": True, "evalFraction": 0.2, "maxSamples": 5}
    )
    data = prepare_data(spec, seed=3)
    assert data.skipped_rows == 2 and len(data.eval) == 4 and len(data.train) == 5
    assert os.path.basename(data.source) == "t.jsonl"
