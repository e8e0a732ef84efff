"""dataset.mix: several sources, each formatted, prefixed and split on its own, mixed by weight reproducibly by
seed; errors name the source."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from datasets import Dataset
from kubetune.api import DatasetSpec
from kubetune.api.runtime import ENV_CONFIGMAP_ROOT, ENV_PVC_ROOT
from kubetune_trainer.data import prepare_data
from kubetune_trainer.data_mix import check_same_kind, mix_sources, probabilities_of
from kubetune_trainer.errors import InvalidInputError
from kubetune_trainer.sft_trainer import overall_eval_loss

ALPACA = [{"instruction": f"Add {i} and {i}", "input": "", "output": str(2 * i)} for i in range(40)]
QA = [{"question": f"Capital number {i}?", "answer": f"City {i}"} for i in range(20)]
CHAT = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Colour {i}?"},
            {"role": "assistant", "content": f"Blue {i}."},
            {"role": "user", "content": "Sure?"},
            {"role": "assistant", "content": "Yes."},
        ]
    }
    for i in range(10)
]


@pytest.fixture
def volume(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv(ENV_PVC_ROOT, str(tmp_path / "pvc"))
    monkeypatch.setenv(ENV_CONFIGMAP_ROOT, str(tmp_path / "cm"))
    return tmp_path


def write_jsonl(path: Path, items: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items))


def two_sources(volume: Path, **dataset) -> DatasetSpec:
    """'math' (alpaca, a volume, weight 3, prefix) and 'capitals' (qa, a ConfigMap, weight 1, no prefix)."""
    write_jsonl(volume / "pvc" / "data" / "math.jsonl", ALPACA)
    write_jsonl(volume / "cm" / "capitals" / "qa.jsonl", QA)
    mix = [
        {"name": "math", "pvc": {"claimName": "data", "path": "math.jsonl"}, "weight": 3, "taskPrefix": "math: "},
        {"name": "capitals", "configMap": {"name": "capitals", "key": "qa.jsonl"}, "evalFraction": 0.25},
    ]
    return DatasetSpec.model_validate({"mix": mix, "evalFraction": 0.1, **dataset})


def source(name: str, size: int, weight: float) -> SimpleNamespace:
    return SimpleNamespace(
        name=name, weight=weight, train=Dataset.from_dict({"text": [f"{name}-{i}" for i in range(size)]})
    )


# --- mixing ------------------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_rows_in_the_same_order_and_another_seed_does_not():
    sources = [source("a", 300, 2), source("b", 300, 1), source("c", 300, 1)]
    first = mix_sources(sources, seed=7).train["text"]
    again = mix_sources(sources, seed=7).train["text"]
    other = mix_sources(sources, seed=8).train["text"]
    assert first == again
    assert first != other and set(first[:50]) != set(other[:50])


def test_weights_are_respected_on_a_large_mix():
    # 5:3:2 over three sources of 10000 rows: first_exhausted stops when 'a' (p=0.5) runs out, at about 20000 rows.
    sources = [source("a", 10_000, 5), source("b", 10_000, 3), source("c", 10_000, 2)]
    mixed = mix_sources(sources, seed=42)
    total = len(mixed.train)
    assert mixed.rows_per_source["a"] == 10_000  # the first source to run out is drawn whole, once
    assert 19_000 < total < 21_000
    for name, expected in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        share = mixed.rows_per_source[name] / total
        assert abs(share - expected) < 0.015, (name, share, mixed.rows_per_source)
    print(f"5:3:2 mix of 3 x 10000 rows, seed 42: {total} rows, {mixed.rows_per_source}")
    assert len(set(mixed.train["text"])) == total, "first_exhausted draws every row at most once"


def test_stopping_strategies_set_the_rows_per_epoch(caplog):
    sources = [source("big", 1000, 1), source("small", 100, 1)]
    first = mix_sources(sources, seed=1, stopping_strategy="first_exhausted")
    assert "leaving most rows of big (" in caplog.text and "of 1000) untrained" in caplog.text
    assert first.rows_per_source["small"] == 100 and len(first.train) < 250  # cut when 'small' runs out
    every = mix_sources(sources, seed=1, stopping_strategy="all_exhausted")
    assert every.rows_per_source["big"] >= 1000 and every.rows_per_source["small"] > 500  # 'small' repeats
    once = mix_sources(sources, seed=1, stopping_strategy="all_exhausted_without_replacement")
    assert once.rows_per_source == {"big": 1000, "small": 100}


def test_probabilities_are_weights_over_their_sum():
    assert probabilities_of({"a": 3, "b": 1}) == {"a": 0.75, "b": 0.25}


def test_only_rows_of_one_kind_mix_and_the_error_names_the_sources():
    assert check_same_kind({"a": "alpaca", "b": "qa"}) == "alpaca"
    assert check_same_kind({"a": "chat", "b": "chat"}) == "chat"
    with pytest.raises(InvalidInputError, match=r"talk \(chat: chat\), math \(alpaca: prompt/completion text\)"):
        check_same_kind({"talk": "chat", "math": "alpaca"})


def test_a_source_left_without_training_rows_is_named():
    with pytest.raises(InvalidInputError, match="source\\(s\\) empty have no training rows"):
        mix_sources([source("full", 10, 1), source("empty", 0, 1)], seed=1)


def test_overall_eval_loss_is_the_row_weighted_mean():
    metrics = {"eval_a_loss": 1.0, "eval_b_loss": 2.0}
    assert overall_eval_loss(metrics, {"a": 30, "b": 10}) == pytest.approx(1.25)
    assert overall_eval_loss({}, {"a": 3}) is None


# --- preparing a mix -----------------------------------------------------------------------------------------


def test_each_source_is_split_on_its_own_and_evaluated_apart(volume: Path):
    data = prepare_data(two_sources(volume), seed=3)
    assert set(data.eval_by_source) == {"math", "capitals"}
    assert len(data.eval_by_source["math"]) == 4 and len(data.eval_by_source["capitals"]) == 5  # 10% / 25%
    assert len(data.eval) == 9 and isinstance(data.trainer_eval, dict)
    assert all(row["completion"].startswith("City") for row in data.eval_by_source["capitals"])
    assert data.mix is not None and data.mix.probabilities == {"math": 0.75, "capitals": 0.25}
    assert sum(data.mix.rows_per_source.values()) == len(data.train)
    held_out = {row["prompt"] for rows in data.eval_by_source.values() for row in rows}
    assert not held_out & set(data.train["prompt"]), "no evaluation row is trained"


def test_the_task_prefix_is_in_the_prompt_only(volume: Path):
    data = prepare_data(two_sources(volume), seed=3)
    math_rows = [row for row in data.train if "Add " in row["prompt"]]
    assert math_rows and all("### Instruction:\nmath: Add " in row["prompt"] for row in math_rows)
    assert not any("math: " in row["completion"] for row in data.train)
    assert all("math: " in row["prompt"] for row in data.eval_by_source["math"]), "evaluation rows carry it too"
    capitals = [row for row in data.train if "Capital" in row["prompt"]]
    assert capitals and not any("math: " in row["prompt"] for row in capitals), "a source without prefix"


def test_chat_sources_get_the_prefix_on_the_first_user_message(volume: Path):
    write_jsonl(volume / "cm" / "talk" / "a.jsonl", CHAT)
    write_jsonl(volume / "cm" / "talk" / "b.jsonl", CHAT)
    mix = [
        {"name": "one", "configMap": {"name": "talk", "key": "a.jsonl"}, "taskPrefix": "[one] "},
        {"name": "two", "configMap": {"name": "talk", "key": "b.jsonl"}, "taskPrefix": "[two] "},
    ]
    data = prepare_data(DatasetSpec.model_validate({"mix": mix, "evalFraction": 0.2}), seed=1)
    assert data.format == "chat"
    for row in data.train:  # one row per assistant turn; every prompt starts with a prefixed user message
        users = [message["content"] for message in row["prompt"] if message["role"] == "user"]
        assert users[0].startswith(("[one] Colour", "[two] Colour")) and users[1:] in ([], ["Sure?"])
        assert not row["completion"][0]["content"].startswith("[")


def test_the_mix_is_the_same_for_the_same_seed(volume: Path):
    spec = two_sources(volume)
    first, again, other = prepare_data(spec, seed=3), prepare_data(spec, seed=3), prepare_data(spec, seed=4)
    assert first.train["prompt"] == again.train["prompt"] and first.fingerprint == again.fingerprint
    assert first.train["prompt"] != other.train["prompt"]


def test_dataset_settings_apply_to_sources_that_do_not_set_their_own(volume: Path):
    write_jsonl(volume / "pvc" / "data" / "math.jsonl", ALPACA)
    write_jsonl(volume / "pvc" / "data" / "more.jsonl", ALPACA)
    mix = [
        {"name": "a", "pvc": {"claimName": "data", "path": "math.jsonl"}, "maxSamples": 5},
        {"name": "b", "pvc": {"claimName": "data", "path": "more.jsonl"}, "promptTemplate": "Q: {instruction}\nA: "},
    ]
    spec = DatasetSpec.model_validate({"mix": mix, "promptTemplate": "Task: {instruction}\n", "evalFraction": 0.2})
    data = prepare_data(spec, seed=1)
    assert data.mix is not None and data.mix.rows_per_source["a"] == 5  # maxSamples of a, before mixing
    assert all(row["prompt"].startswith(("Task: ", "Q: ")) for row in data.train)
    assert len(data.eval_by_source["a"]) == 8 and len(data.eval_by_source["b"]) == 8
    assert data.prompt_template is None  # two templates: the manifest lists each source's


def test_a_source_without_evaluation_is_left_out_of_it(volume: Path):
    spec = two_sources(volume)
    spec.mix[0].eval_fraction = 0.0
    data = prepare_data(spec, seed=3)
    assert set(data.eval_by_source) == {"capitals"}


def test_a_bad_row_is_reported_with_its_source(volume: Path):
    spec = two_sources(volume)
    write_jsonl(volume / "cm" / "capitals" / "qa.jsonl", [*QA, {"question": "Missing answer?"}])
    with pytest.raises(InvalidInputError, match=r"dataset.mix\[capitals\] row 21 does not fit format qa"):
        prepare_data(spec, seed=3)


def test_a_missing_file_is_reported_with_its_source(volume: Path):
    spec = two_sources(volume)
    (volume / "cm" / "capitals" / "qa.jsonl").unlink()
    with pytest.raises(InvalidInputError, match=r"dataset.mix\[capitals\].configMap: .*qa.jsonl does not exist"):
        prepare_data(spec, seed=3)


def test_undetectable_columns_name_the_source(volume: Path):
    spec = two_sources(volume)
    spec.mix[1].name = "qa"  # a name that the message's list of formats holds anyway
    write_jsonl(volume / "cm" / "capitals" / "qa.jsonl", [{"sentence": "x", "label": 1}] * 4)
    with pytest.raises(InvalidInputError, match=r"dataset.mix source 'qa': dataset.format: cannot tell"):
        prepare_data(spec, seed=3)


def test_max_samples_caps_the_mixed_rows(volume: Path):
    data = prepare_data(two_sources(volume, maxSamples=12), seed=3)
    assert len(data.train) == 12
    assert data.mix is not None and sum(data.mix.rows_per_source.values()) == 12, "counts are of the rows trained"


def test_the_multi_task_example_mixes_as_its_comment_says(tmp_path: Path, monkeypatch):
    import shutil

    import yaml
    from kubetune.api import FineTuneJobSpec

    repo = Path(__file__).resolve().parents[2]
    document = yaml.safe_load((repo / "examples" / "multi-task.yaml").read_text(encoding="utf-8"))
    spec = FineTuneJobSpec.model_validate(document["spec"])
    for source in spec.dataset.mix or []:  # as `kubectl create configmap NAME --from-file=examples/data/KEY`
        assert source.config_map is not None
        folder = tmp_path / source.config_map.name
        folder.mkdir()
        shutil.copy(repo / "examples" / "data" / source.config_map.key, folder / source.config_map.key)
    monkeypatch.setenv(ENV_CONFIGMAP_ROOT, str(tmp_path))
    data = prepare_data(spec.dataset, spec.training.seed)
    assert data.mix is not None and (len(data.train), data.mix.rows_per_source) == (
        618,
        {"sentiment": 432, "medical": 186},
    )
    assert {name: len(rows) for name, rows in data.eval_by_source.items()} == {"sentiment": 48, "medical": 5}
    assert data.train.filter(lambda row: row["prompt"].startswith("### Instruction:\n[의료] ")).num_rows == 186


def test_callbacks_hear_of_one_evaluation_with_every_sources_loss_and_the_overall(tiny_model_dir: Path, tmp_path):
    """Early stopping and loadBestModelAtEnd read eval_loss from the one on_evaluate event of each evaluation."""
    from kubetune.api import FineTuneJobSpec
    from kubetune_trainer.configs import build_configs
    from kubetune_trainer.data_formats import format_rows
    from kubetune_trainer.device import DeviceInfo
    from kubetune_trainer.model_loading import ModelLocation, load_model, load_tokenizer
    from kubetune_trainer.sft_trainer import build_trainer
    from transformers import TrainerCallback

    from tests.trainer.helpers import base_spec

    class Heard(TrainerCallback):
        def __init__(self) -> None:
            self.events: list[dict] = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.events.append(dict(metrics or {}))

    spec = FineTuneJobSpec.model_validate(base_spec())
    configs = build_configs(spec, checkpoints_dir=tmp_path, device=DeviceInfo(kind="cpu"), has_eval=True)
    location = ModelLocation(str(tiny_model_dir), None, False)
    model = load_model(location, "fp32", DeviceInfo(kind="cpu"), None, gradient_checkpointing=False)
    sets = {
        "math": format_rows(Dataset.from_list(ALPACA[:6]), "alpaca").dataset,
        "capitals": format_rows(Dataset.from_list(QA[:2]), "qa").dataset,
    }
    heard_by = Heard()
    trainer = build_trainer(model, load_tokenizer(location), configs, sets["math"], sets, [heard_by], 128)
    metrics = trainer.evaluate()
    assert len(heard_by.events) == 1, "one event per evaluation, not one per source"
    heard = heard_by.events[0]
    assert {"eval_math_loss", "eval_capitals_loss", "eval_loss"} <= set(heard)
    assert heard["eval_loss"] == pytest.approx((heard["eval_math_loss"] * 6 + heard["eval_capitals_loss"] * 2) / 8)
    assert metrics["eval_loss"] == heard["eval_loss"]
    assert trainer.state.log_history[-1]["eval_loss"] == heard["eval_loss"]


def test_a_hub_source_evaluates_on_its_named_split(volume: Path, monkeypatch):
    # load_dataset resolves an 'org/name' id to a local folder first; offline, this stands in for the Hub.
    write_jsonl(volume / "acme" / "quiz" / "train.jsonl", QA)
    write_jsonl(volume / "acme" / "quiz" / "test.jsonl", QA[:3])
    write_jsonl(volume / "pvc" / "data" / "qa.jsonl", QA)
    monkeypatch.chdir(volume)
    mix = [
        {"name": "hub", "hf": {"name": "acme/quiz"}, "evalSplit": "test", "taskPrefix": "quiz: "},
        {"name": "local", "pvc": {"claimName": "data", "path": "qa.jsonl"}},
    ]
    data = prepare_data(DatasetSpec.model_validate({"mix": mix}), seed=1)
    assert len(data.eval_by_source["hub"]) == 3 and len(data.eval_by_source["local"]) == 2
    assert all("quiz: Capital" in row["prompt"] for row in data.eval_by_source["hub"])
    assert data.mix is not None and data.mix.rows_per_source["hub"] <= 20


def test_url_sources_of_one_file_name_download_apart(tmp_path: Path, monkeypatch):
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    from kubetune_trainer import data_sources

    from tests.support.https import https_server
    from tests.trainer.helpers import allow_loopback

    site = tmp_path / "site"
    write_jsonl(site / "a" / "train.jsonl", ALPACA)
    write_jsonl(site / "b" / "train.jsonl", QA)
    with https_server(tmp_path, partial(SimpleHTTPRequestHandler, directory=str(site))) as (url, certificate):
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
        monkeypatch.setattr(data_sources, "ADDRESS_POLICY", allow_loopback)
        mix = [{"name": "math", "url": f"{url}/a/train.jsonl"}, {"name": "capitals", "url": f"{url}/b/train.jsonl"}]
        data = prepare_data(DatasetSpec.model_validate({"mix": mix}), seed=1, download_dir=tmp_path / "dl")
    assert (tmp_path / "dl" / "math" / "train.jsonl").is_file() and (
        tmp_path / "dl" / "capitals" / "train.jsonl"
    ).is_file()
    assert {source.format for source in data.sources} == {"alpaca", "qa"}
