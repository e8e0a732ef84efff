"""What the trainer is built to learn from, checked without training: completion-only labels by default,
padding-free rows cut to maxSeqLength, the Hub push call, and a Hub token that never reaches the logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset
from kubetune.api import FineTuneJobSpec, OutputSpec
from kubetune_trainer.configs import build_configs
from kubetune_trainer.data_formats import format_rows
from kubetune_trainer.device import DeviceInfo
from kubetune_trainer.errors import TrainerFailure
from kubetune_trainer.hub_push import push_adapter
from kubetune_trainer.model_loading import ModelLocation, load_model, load_tokenizer
from kubetune_trainer.sft_trainer import build_trainer

from tests.support.tiny_model import synthetic_facts
from tests.trainer.helpers import base_spec, run_in_process, write_spec


def trainer_for(model_dir: Path, rows: list[dict], tmp_path: Path, **training):
    spec = FineTuneJobSpec.model_validate(base_spec(training=training))
    configs = build_configs(spec, checkpoints_dir=tmp_path, device=DeviceInfo(kind="cpu"), has_eval=False)
    location = ModelLocation(str(model_dir), None, False)
    tokenizer = load_tokenizer(location)
    model = load_model(location, "fp32", DeviceInfo(kind="cpu"), None, gradient_checkpointing=False)
    data = format_rows(Dataset.from_list(rows), "alpaca").dataset
    trainer = build_trainer(model, tokenizer, configs, data, None, [], spec.training.max_seq_length)
    return trainer, tokenizer


def test_only_the_answer_and_eos_carry_loss_by_default(tiny_model_dir: Path, tmp_path: Path):
    facts = synthetic_facts()[:4]
    rows = [{"instruction": f.question, "input": "", "output": f.answer} for f in facts]
    trainer, tokenizer = trainer_for(tiny_model_dir, rows, tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for row, labels in zip(trainer.train_dataset, batch["labels"], strict=True):
        trained = [token for token in labels.tolist() if token != -100]
        text = tokenizer.decode(trained)
        assert text in {f"{f.answer}{tokenizer.eos_token}" for f in facts}
        assert tokenizer.decode(row["input_ids"]).endswith(text)


def test_padding_free_rows_are_cut_to_max_seq_length(tiny_model_dir: Path, tmp_path: Path):
    # The answer starts inside the first 24 tokens: cut rows keep some loss (those that do not are dropped).
    rows = [{"instruction": "Fox?", "input": "", "output": "north " * 10}] * 3
    trainer, _ = trainer_for(tiny_model_dir, rows, tmp_path, paddingFree=True, maxSeqLength=24)
    for row in trainer.train_dataset:
        assert {len(value) for value in row.values() if isinstance(value, list)} == {24}
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert batch["input_ids"].shape == (1, 72), "padding-free: one concatenated row, no padding"
    assert "position_ids" in batch


def test_push_to_the_hub_creates_the_repo_and_uploads_the_folder(tmp_path: Path, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, commit_message, ignore_patterns):
            calls.append(("upload", folder_path, repo_id, ignore_patterns))

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_read_only")  # the base model's token: never used to push
    monkeypatch.setenv("HF_PUSH_TOKEN", "hf_secret")
    output = OutputSpec.model_validate({"hub": {"repo": "acme/adapter", "tokenSecretRef": {"name": "hub"}}})
    assert push_adapter(tmp_path, output) == "acme/adapter"
    assert calls == [
        ("token", "hf_secret"),
        ("create", "acme/adapter", True, True),
        ("upload", str(tmp_path), "acme/adapter", ["training_args.bin"]),  # a pickle never goes to the Hub
    ]
    assert push_adapter(tmp_path, OutputSpec()) is None
    monkeypatch.delenv("HF_PUSH_TOKEN")  # HF_TOKEN alone (a read token) is not enough
    with pytest.raises(TrainerFailure, match="no Hub token in HF_PUSH_TOKEN"):
        push_adapter(tmp_path, output)


def test_the_hub_token_never_reaches_logs_or_the_termination_message(pvc_root: Path, tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG)
    spec = base_spec(baseModel={"name": "acme/private-model", "tokenSecretRef": {"name": "hf"}})
    code = run_in_process(write_spec(tmp_path, spec), tmp_path / "output", pvc_root, HF_TOKEN="hf_TOPSECRET123")
    assert code == 65
    summary = (tmp_path / "termination-log").read_text()
    assert "acme/private-model" in json.loads(summary)["message"]
    assert "hf_TOPSECRET123" not in summary and "hf_TOPSECRET123" not in caplog.text


def test_a_tokenizer_without_chat_template_or_pad_gets_working_defaults(tiny_model_dir: Path, tmp_path: Path):
    import shutil

    from kubetune_trainer.model_loading import FALLBACK_CHAT_TEMPLATE
    from transformers import AutoTokenizer

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    tokenizer = AutoTokenizer.from_pretrained(bare)
    tokenizer.chat_template = None
    tokenizer.pad_token = None
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(bare)
    loaded = load_tokenizer(ModelLocation(str(bare), None, False))
    assert loaded.chat_template == FALLBACK_CHAT_TEMPLATE
    assert loaded.pad_token == loaded.eos_token
    text = loaded.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
