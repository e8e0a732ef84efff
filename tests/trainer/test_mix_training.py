"""A dataset.mix run on the tiny model, end to end: each source is evaluated apart (eval_<source>_loss), the
overall evalLoss is their row-weighted mean (and drives loadBestModelAtEnd), and metrics.json, the manifest and the
model card report every source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubetune.api.runtime import ADAPTER_DIR, MANIFEST_FILE, METRICS_FILE

from tests.trainer.helpers import DATA_CLAIM, base_spec, newest_log_history, run_in_process, write_spec

pytestmark = pytest.mark.slow

MIX = [
    {"name": "facts", "pvc": {"claimName": DATA_CLAIM, "path": "facts.jsonl"}, "weight": 3, "taskPrefix": "fact: "},
    {"name": "quiz", "pvc": {"claimName": DATA_CLAIM, "path": "facts-qa.jsonl"}, "evalFraction": 0.2},
]
TRAINING = {"maxSteps": 8, "evalSteps": 4, "saveSteps": 4, "loadBestModelAtEnd": True, "loggingSteps": 4}


@pytest.fixture(scope="module")
def mix_run(pvc_root: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mix")
    spec = base_spec(dataset={"mix": MIX, "evalFraction": 0.1}, training=TRAINING)
    output = folder / "output"
    assert run_in_process(write_spec(folder, spec), output, pvc_root) == 0
    return output


def test_each_source_is_evaluated_apart_and_eval_loss_is_their_row_weighted_mean(mix_run: Path):
    metrics = json.loads((mix_run / ADAPTER_DIR / METRICS_FILE).read_text())
    sources = {source["name"]: source for source in metrics["sources"]}
    assert set(sources) == {"facts", "quiz"}
    # 128 rows each: facts holds out 10% (13), quiz 20% (26); weights 3:1.
    assert (sources["facts"]["evalRows"], sources["quiz"]["evalRows"]) == (13, 26)
    assert (sources["facts"]["probability"], sources["quiz"]["probability"]) == (0.75, 0.25)
    assert sources["facts"]["trainRows"] == 115 and 0 < sources["quiz"]["trainRows"] < 115
    losses = {name: source["evalLoss"] for name, source in sources.items()}
    assert all(loss is not None and loss > 0 for loss in losses.values())
    weighted = (losses["facts"] * 13 + losses["quiz"] * 26) / 39
    assert metrics["evalLoss"] == pytest.approx(weighted, rel=1e-6)
    history = newest_log_history(mix_run)
    step = metrics["publishedStep"]
    logged = {key: value for entry in history if entry.get("step") == step for key, value in entry.items()}
    assert logged["eval_facts_loss"] == pytest.approx(losses["facts"])
    assert logged["eval_quiz_loss"] == pytest.approx(losses["quiz"])
    assert [entry["step"] for entry in history if "eval_loss" in entry] == [4, 8], "overall loss at each evaluation"


def test_manifest_and_model_card_describe_every_source(mix_run: Path):
    manifest = json.loads((mix_run / ADAPTER_DIR / MANIFEST_FILE).read_text())
    assert [source["name"] for source in manifest["mixSources"]] == ["facts", "quiz"]
    facts = manifest["mixSources"][0]
    assert facts["taskPrefix"] == "fact: " and facts["format"] == "alpaca" and facts["source"] == "pvc:data/facts.jsonl"
    assert manifest["datasetSource"] == "mix:facts,quiz"
    card = (mix_run / ADAPTER_DIR / "README.md").read_text()
    assert "## Data mix" in card
    assert "| facts | `pvc:data/facts.jsonl` | alpaca | 'fact: ' | 0.750 | 115 of 115 | 13 |" in card
    assert "prompt = '### Instruction:\\nfact: Your instruction\\n\\n" in card, "the usage builds source 1's prompt"


def test_early_stopping_reads_the_overall_eval_loss_of_a_mix(pvc_root: Path, tmp_path: Path):
    """No evaluation improves by 100: training.earlyStopping stops at the second evaluation, as with one dataset
    (it would never stop if the per-source evaluations hid eval_loss from it: without the trainer's evaluate)."""
    training = {"maxSteps": 20, "evalSteps": 2, "saveSteps": 2, "earlyStopping": {"patience": 1, "threshold": 100}}
    spec = base_spec(dataset={"mix": MIX, "evalFraction": 0.1}, training=training)
    output = tmp_path / "output"
    assert run_in_process(write_spec(tmp_path, spec), output, pvc_root) == 0
    metrics = json.loads((output / ADAPTER_DIR / METRICS_FILE).read_text())
    assert metrics["steps"] == 4 and metrics["stopReason"] == "EarlyStopped", metrics
    assert all(source["evalLoss"] is not None for source in metrics["sources"])
