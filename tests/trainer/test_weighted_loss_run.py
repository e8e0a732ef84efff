"""training.lossWeights on the tiny model: with the same seed and data, a run that weighs two answer words 5x
leaves a lower loss on those words for questions it never saw than the unweighted run, and it does so for those
words in particular (the other answer words do not gain as much)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kubetune.api.runtime import ADAPTER_DIR

from tests.trainer.helpers import DATA_CLAIM, base_spec, fact_prompt, load_adapted, run_in_process, write_spec

pytestmark = pytest.mark.slow  # each test trains the tiny model twice

WORDS = ["north", "south", "east", "west", "river", "stone", "cloud", "flame"]
TERMS = ["river", "cloud"]
TRAINED = ["amber fox", "blue heron", "coral snake", "dusty owl", "ember cat", "frost hare", "golden eel", "hazel wren"]
# Recombined from the same words (so the tokenizer knows them), never trained on: what the model answers for
# these is what it learned about the answers in general, not about one question.
HELD_OUT = [
    "amber owl",
    "blue cat",
    "coral hare",
    "dusty eel",
    "ember wren",
    "frost fox",
    "golden heron",
    "hazel snake",
]


def _write_data(pvc_root: Path) -> str:
    """Every trained subject is answered with every word once: the answer does not depend on the question, so an
    unweighted model learns the words as equally likely (loss ln 8 = 2.08 each), and a model trained with weight w
    on k of the 8 words tends to p = w / (w k + 8 - k) for them (5 / 16 here: loss 1.16) and 1 / 16 for the others
    (loss 2.77), whatever the CPU: the margins below are half of these theoretical gaps."""
    rows = [
        {"instruction": f"Where does the {subject} live?", "input": "", "output": word}
        for subject in TRAINED
        for word in WORDS
    ]
    path = pvc_root / DATA_CLAIM / "weighted-words.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path.name


def _train(pvc_root: Path, folder: Path, data_file: str, **training) -> Path:
    recipe = {"maxSteps": 60, "learningRate": 1e-2, "batchSize": 8, **training}
    spec = base_spec(data_file, training=recipe, dataset={"pvc": {"claimName": DATA_CLAIM, "path": data_file}})
    spec["dataset"]["evalFraction"] = 0
    assert run_in_process(write_spec(folder, spec), folder / "output", pvc_root) == 0
    return folder / "output" / ADAPTER_DIR


def _mean_answer_nll(adapter: Path, model_dir: Path, words: list[str]) -> float:
    """Mean per-token loss of `words` as the answer (teacher-forced, eos included) to the held-out questions."""
    model, tokenizer = load_adapted(model_dir, adapter)
    losses = []
    for subject in HELD_OUT:
        prompt = tokenizer(fact_prompt(f"Where does the {subject} live?"), add_special_tokens=False)["input_ids"]
        for word in words:
            answer = tokenizer(word + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + answer])).logits[0].float()
            predicting = logits[len(prompt) - 1 : len(prompt) + len(answer) - 1]
            per_token = torch.nn.functional.cross_entropy(predicting, torch.tensor(answer), reduction="none")
            losses.extend(per_token[:-1].tolist())  # the word's tokens, not the eos after it
    return sum(losses) / len(losses)


def test_weighted_words_lose_less_on_unseen_questions(pvc_root: Path, tiny_model_dir: Path, tmp_path: Path):
    data = _write_data(pvc_root)
    plain = _train(pvc_root, tmp_path / "plain", data)
    weighted = _train(pvc_root, tmp_path / "weighted", data, lossWeights={"terms": TERMS, "weight": 5.0})
    others = [word for word in WORDS if word not in TERMS]
    scores = {
        name: (_mean_answer_nll(adapter, tiny_model_dir, TERMS), _mean_answer_nll(adapter, tiny_model_dir, others))
        for name, adapter in (("plain", plain), ("weighted", weighted))
    }
    print(f"held-out per-token loss (terms, other words): {scores}")
    (plain_terms, plain_others), (weighted_terms, weighted_others) = scores["plain"], scores["weighted"]
    assert weighted_terms < plain_terms - 0.45, scores
    assert (weighted_others - weighted_terms) > (plain_others - plain_terms) + 0.8, scores


def test_weights_apply_to_padding_free_batches(pvc_root: Path, tmp_path: Path):
    """Padding-free (and packed) batches are one long row whose sequence starts are masked (-100) by trl's
    collator, so words are still matched inside each answer only: the weighted run trains and its logged training
    loss exceeds the unweighted one's on the same batches (the weighted tokens count 5x)."""
    data = _write_data(pvc_root)
    losses = {}
    for name, extra in (("plain", {}), ("weighted", {"lossWeights": {"terms": TERMS, "weight": 5.0}})):
        adapter = _train(pvc_root, tmp_path / name, data, maxSteps=2, loggingSteps=1, paddingFree=True, **extra)
        metrics = json.loads((adapter / "metrics.json").read_text())
        losses[name] = metrics["trainLoss"]
        assert metrics["stopReason"] == "MaxSteps"
        assert metrics["stopMessage"] == "reached training.maxSteps 2 (no evaluation during training)"
    assert losses["weighted"] > losses["plain"] * 1.2, losses
    card = (adapter / "README.md").read_text()
    assert "| Loss weights | x5 on the tokens of `river`, `cloud` (training loss only) |" in card
