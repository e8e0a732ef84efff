"""dataset.augmentation in the trainer, for behaviour, not quality: which text is rewritten, what is dropped and
counted, that the new rows reach training and the evaluation rows do not change, determinism by seed, and the cache
on the output volume (a second run generates nothing; a changed setting generates again)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubetune.api import FineTuneJobSpec
from kubetune.api.runtime import ADAPTER_DIR, ENV_PVC_ROOT, METRICS_FILE
from kubetune_trainer import augment_generation
from kubetune_trainer.augment import CACHE_DIR, augment_sources, choose_rows, keep_outputs
from kubetune_trainer.augment_generation import Generated
from kubetune_trainer.augment_prompts import rewritable
from kubetune_trainer.data import combine_sources, prepare_sources
from kubetune_trainer.data_formats import ALPACA_TEMPLATE, ALPACA_TEMPLATE_NO_INPUT, QA_TEMPLATE
from kubetune_trainer.device import DeviceInfo
from kubetune_trainer.distributed import ProcessInfo
from kubetune_trainer.errors import InvalidInputError

from tests.support.augmentation_models import build_ending_model, build_tiny_translation_model, write_instruction_rows
from tests.trainer.helpers import DATA_CLAIM, MODEL_CLAIM, base_spec, run_in_process, write_spec

MAIN = ProcessInfo(rank=0, world_size=1, local_world_size=1)
CPU = DeviceInfo(kind="cpu")
ENDING_PATH = "ending"
TRANSLATION_PATH = "translator"
INSTRUCTIONS, INSTRUCTIONS_QA = "augment-instructions-alpaca.jsonl", "augment-instructions-qa.jsonl"
INSTRUCTIONS_CHAT = "augment-instructions-chat.jsonl"


# ---- the pure parts ------------------------------------------------------------------------------------------------
def test_only_ended_new_different_texts_are_kept_and_each_drop_is_counted():
    dropped: Counter[str] = Counter()
    outputs = [
        Generated("Where  does the AMBER fox live?", True),  # the source, other case and spacing
        Generated("", True),
        Generated("In which place is the amber fox found", False),  # cut at maxNewTokens
        Generated("Where is the amber fox at home?", True),
        Generated("where is the amber fox at home?", True),  # the same as the copy before
        Generated("What is the amber fox's home?", True),
        Generated("The amber fox lives in the north.", True),  # answered instead of rewritten
    ]
    kept = keep_outputs("Where does the amber fox live?", outputs, dropped)
    assert kept == ["Where is the amber fox at home?", "What is the amber fox's home?"]
    assert dropped == Counter(unchanged=1, empty=1, too_long=1, duplicate=1, not_a_question=1)


def test_a_question_must_stay_a_question_and_a_statement_may_become_anything():
    dropped: Counter[str] = Counter()
    full_width = "서울에는 몇 명이 사나요\uff1f"
    assert keep_outputs("서울의 인구는?", [Generated(full_width, True)], dropped) == [full_width]
    assert keep_outputs("Name the fox.", [Generated("Which fox is it?", True)], dropped) == ["Which fox is it?"]
    assert not dropped


@pytest.mark.parametrize(
    ("fmt", "template", "row", "text", "rewritten"),
    [
        (
            "alpaca",
            ALPACA_TEMPLATE,
            {"prompt": ALPACA_TEMPLATE_NO_INPUT.format(instruction="Name the fox."), "completion": "amber"},
            "Name the fox.",
            ALPACA_TEMPLATE_NO_INPUT.format(instruction="NEW"),
        ),
        (
            "alpaca",
            ALPACA_TEMPLATE,
            {"prompt": ALPACA_TEMPLATE.format(instruction="Sum it.", input="1 2"), "completion": "3"},
            "Sum it.",  # the input is the material the answer depends on: kept
            ALPACA_TEMPLATE.format(instruction="NEW", input="1 2"),
        ),
        (
            "qa",
            QA_TEMPLATE,
            {"prompt": QA_TEMPLATE.format(question="Why?"), "completion": "Because."},
            "Why?",
            QA_TEMPLATE.format(question="NEW"),
        ),
        ("qa", "Q: {question}\nA:", {"prompt": "Q: Who?\nA:", "completion": "Me."}, "Who?", "Q: NEW\nA:"),
    ],
    ids=["alpaca-no-input", "alpaca-input", "qa", "qa-custom-template"],
)
def test_the_prompt_side_is_rewritten_and_the_answer_kept(fmt, template, row, text, rewritten):
    found = rewritable(row, fmt, template)
    assert found is not None and found.text == text
    assert found.rebuild("NEW") == {"prompt": rewritten, "completion": row["completion"]}


def test_chat_rewrites_the_first_user_message_only():
    """The message that starts the conversation: every assistant turn's row (completion-only loss makes one per
    turn) then has a context that differs from the original's, instead of repeating the earlier turns unchanged."""
    row = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where does the fox live?"},
            {"role": "assistant", "content": "north"},
            {"role": "user", "content": "And the owl?"},
        ],
        "completion": [{"role": "assistant", "content": "south"}],
    }
    found = rewritable(row, "chat", None)
    assert found is not None and found.text == "Where does the fox live?"
    rebuilt = found.rebuild("NEW")
    assert [m["content"] for m in rebuilt["prompt"]] == ["Be brief.", "NEW", "north", "And the owl?"]
    assert rebuilt["completion"] == row["completion"]
    assert row["prompt"][1]["content"] == "Where does the fox live?", "the source row is not changed"
    assert rewritable({"prompt": [{"role": "system", "content": "x"}], "completion": []}, "chat", None) is None


def test_a_task_prefix_is_kept_out_of_the_rewrite_and_put_back():
    row = {"prompt": ALPACA_TEMPLATE_NO_INPUT.format(instruction="[med] Name the fox."), "completion": "amber"}
    found = rewritable(row, "alpaca", ALPACA_TEMPLATE, task_prefix="[med] ")
    assert found is not None and found.text == "Name the fox."
    assert found.rebuild("NEW")["prompt"] == ALPACA_TEMPLATE_NO_INPUT.format(instruction="[med] NEW")
    chat = {"prompt": [{"role": "user", "content": "[med] Hi"}], "completion": [{"role": "assistant", "content": "x"}]}
    found = rewritable(chat, "chat", None, task_prefix="[med] ")
    assert found is not None and found.rebuild("Hello")["prompt"][0]["content"] == "[med] Hello"


def test_a_prompt_that_does_not_follow_the_template_is_left_alone():
    assert rewritable({"prompt": "free text", "completion": "x"}, "qa", QA_TEMPLATE) is None


def test_rows_are_chosen_by_seed_and_fraction():
    assert choose_rows(10, 0.3, seed=1) == choose_rows(10, 0.3, seed=1)
    assert len(choose_rows(10, 0.3, seed=1)) == 3
    assert choose_rows(10, 0.3, seed=1) != choose_rows(10, 0.3, seed=2)
    assert choose_rows(10, 0.01, seed=1) != [] and choose_rows(4, 1.0, seed=1) == [0, 1, 2, 3]


# ---- with a tiny model ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ending_model(pvc_root: Path) -> Path:
    return build_ending_model(pvc_root / MODEL_CLAIM / ENDING_PATH)


@pytest.fixture(scope="module")
def translation_model(pvc_root: Path) -> Path:
    return build_tiny_translation_model(pvc_root / MODEL_CLAIM / TRANSLATION_PATH)


@pytest.fixture
def generate_calls(monkeypatch) -> list[int]:
    """Texts per call of the augmentation model's generate (so a test can see that nothing was generated)."""
    calls: list[int] = []
    original = augment_generation.TextGenerator.generate

    def counting(self, texts, *args, **kwargs):
        calls.append(len(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(augment_generation.TextGenerator, "generate", counting)
    return calls


@pytest.fixture(scope="module")
def instructions(pvc_root: Path) -> str:
    """Instruction rows (not questions) in alpaca, qa and chat files on the data claim."""
    write_instruction_rows(pvc_root / DATA_CLAIM)
    return INSTRUCTIONS


def _spec(augmentation: dict[str, Any], data_file: str = INSTRUCTIONS) -> FineTuneJobSpec:
    wire = base_spec(data_file)
    wire["dataset"] = {**wire["dataset"], "evalFraction": 0.25, "augmentation": augmentation}
    return FineTuneJobSpec.model_validate(wire)


PARAPHRASE = {
    "paraphrase": {
        "model": {"pvc": {"claimName": MODEL_CLAIM, "path": ENDING_PATH}},
        "copies": 3,
        "temperature": 1.0,
        "topP": 1.0,
        "maxNewTokens": 12,
    },
    "fraction": 0.25,
    "batchSize": 16,
}


def _augment(spec: FineTuneJobSpec, output: Path, monkeypatch, pvc_root: Path, me: ProcessInfo = MAIN):
    """The trainer's data step with augmentation: (the rows without it, the rows with it, the report)."""
    monkeypatch.setenv(ENV_PVC_ROOT, str(pvc_root))
    sources = prepare_sources(spec.dataset, spec.training.seed)
    augmented, results = augment_sources(spec, sources, output, me, CPU)
    seed = spec.training.seed
    return combine_sources(spec.dataset, sources, seed), combine_sources(spec.dataset, augmented, seed), results


def _rows(dataset) -> list[str]:
    return [json.dumps(row, sort_keys=True) for row in dataset]


def test_paraphrases_are_added_to_the_training_rows_only_and_counted(
    pvc_root, ending_model, instructions, generate_calls, monkeypatch, tmp_path
):
    data, augmented, results = _augment(_spec(PARAPHRASE), tmp_path, monkeypatch, pvc_root)
    [result] = results
    chosen = round(len(data.train) * 0.25)
    assert (result.kind, result.source_rows, result.generated) == ("paraphrase", chosen, chosen * 3)
    dropped = result.total_dropped()
    assert result.added + dropped == result.generated
    assert result.added > 0, "the ending model finishes some texts: some rows must be added"
    assert len(augmented.train) == len(data.train) + result.added
    assert _rows(augmented.train)[: len(data.train)] == _rows(data.train)
    assert _rows(augmented.eval) == _rows(data.eval), "evaluation rows are never augmented"
    assert augmented.fingerprint != data.fingerprint
    answers = set(data.train["completion"])
    for row in augmented.train.select(range(len(data.train), len(augmented.train))):
        assert row["completion"] in answers
        instruction = row["prompt"].removeprefix("### Instruction:\n").removesuffix("\n\n### Response:\n")
        assert row["prompt"] == ALPACA_TEMPLATE_NO_INPUT.format(instruction=instruction) and instruction.strip()
    assert generate_calls == [chosen]  # one batch of every chosen row


def test_same_seed_same_rows_other_seed_other_rows(pvc_root, ending_model, instructions, monkeypatch, tmp_path):
    _, first, _ = _augment(_spec(PARAPHRASE), tmp_path / "a", monkeypatch, pvc_root)
    _, again, _ = _augment(_spec(PARAPHRASE), tmp_path / "b", monkeypatch, pvc_root)
    _, other, _ = _augment(_spec({**PARAPHRASE, "seed": 1234}), tmp_path / "c", monkeypatch, pvc_root)
    assert _rows(first.train) == _rows(again.train)
    assert _rows(first.train) != _rows(other.train)


def test_a_second_run_reuses_the_cache_and_a_changed_setting_generates_again(
    pvc_root, ending_model, instructions, generate_calls, monkeypatch, tmp_path
):
    _, first, results = _augment(_spec(PARAPHRASE), tmp_path, monkeypatch, pvc_root)
    [cached] = (tmp_path / CACHE_DIR).glob("*.json")
    assert len(generate_calls) == 1
    _, again, results_again = _augment(_spec(PARAPHRASE), tmp_path, monkeypatch, pvc_root)
    assert len(generate_calls) == 1, "a retry or resume generates nothing"
    assert _rows(again.train) == _rows(first.train) and results_again == results
    changed = {**PARAPHRASE, "paraphrase": {**PARAPHRASE["paraphrase"], "copies": 2}}
    _augment(_spec(changed), tmp_path, monkeypatch, pvc_root)
    assert len(generate_calls) == 2, "a changed setting makes new rows"
    [current] = (tmp_path / CACHE_DIR).glob("*.json")
    assert current != cached, "the other setting's rows are removed"


def test_a_replaced_model_generates_again(pvc_root, ending_model, instructions, generate_calls, monkeypatch, tmp_path):
    """The cache key names the model's files (size, modification time): new weights in the same folder are a
    different model."""
    import os

    _augment(_spec(PARAPHRASE), tmp_path, monkeypatch, pvc_root)
    _augment(_spec(PARAPHRASE), tmp_path, monkeypatch, pvc_root)
    assert len(generate_calls) == 1
    weights = ending_model / "model.safetensors"
    stat = weights.stat()
    try:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        _augment(_spec(PARAPHRASE), tmp_path, monkeypatch, pvc_root)
        assert len(generate_calls) == 2
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_other_processes_wait_for_the_main_ones_rows_and_the_model_is_freed(
    pvc_root, ending_model, instructions, generate_calls, monkeypatch, tmp_path
):
    """With several trainer processes only the main one generates; the others read its cache file. The
    augmentation model is gone from memory before the training model would load."""
    import gc
    import threading
    import weakref

    models: list[weakref.ref] = []
    original_init = augment_generation.TextGenerator.__init__

    def remembering(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        models.append(weakref.ref(self.model))

    monkeypatch.setattr(augment_generation.TextGenerator, "__init__", remembering)
    spec = _spec(PARAPHRASE)
    second: dict[str, Any] = {}
    other = ProcessInfo(rank=1, world_size=2, local_world_size=2)
    waiter = threading.Thread(
        target=lambda: second.update(rows=_augment(spec, tmp_path, monkeypatch, pvc_root, other)[1].train)
    )
    waiter.start()
    main_rows = _augment(spec, tmp_path, monkeypatch, pvc_root)[1].train
    waiter.join(timeout=60)
    assert not waiter.is_alive() and _rows(second["rows"]) == _rows(main_rows)
    assert len(generate_calls) == 1, "only the main process generated"
    gc.collect()
    assert len(models) == 1 and models[0]() is None, "the augmentation model was freed"


def test_back_translation_goes_through_the_pivot_and_back(
    pvc_root, ending_model, instructions, generate_calls, monkeypatch, tmp_path
):
    augmentation = {
        "backTranslation": {
            "model": {"pvc": {"claimName": MODEL_CLAIM, "path": ENDING_PATH}},
            "sourceLanguage": "English",
            "pivotLanguage": "French",
            "maxNewTokens": 12,
            "copies": 2,
            "temperature": 1.0,
        },
        "fraction": 0.25,
    }
    data, augmented, [result] = _augment(_spec(augmentation, INSTRUCTIONS_CHAT), tmp_path, monkeypatch, pvc_root)
    chosen = round(len(data.train) * 0.25)
    assert (result.kind, result.source_rows, result.generated) == ("backTranslation", chosen, chosen * 2)
    dropped = result.total_dropped()
    assert result.added + dropped == result.generated
    forward, back = generate_calls  # the chosen texts, then every pivot text that was not dropped
    assert forward == chosen and 0 < result.added <= back <= chosen * 2
    assert len(augmented.train) == len(data.train) + result.added
    for row in augmented.train.select(range(len(data.train), len(augmented.train))):
        assert row["completion"][0]["role"] == "assistant" and row["prompt"][-1]["role"] == "user"


def test_a_translation_model_pair_back_translates_with_the_raw_text(
    pvc_root, translation_model, instructions, generate_calls, monkeypatch, tmp_path, caplog
):
    """The tutorial's way: an opus-mt style encoder-decoder model each way, given the text without a prompt."""
    translator = {"pvc": {"claimName": MODEL_CLAIM, "path": TRANSLATION_PATH}}
    augmentation = {
        "backTranslation": {
            "model": translator,
            "reverseModel": translator,
            "sourceLanguage": "English",
            "pivotLanguage": "German",
            "maxNewTokens": 16,
            "copies": 2,
            "temperature": 1.0,
        },
        "fraction": 0.5,
    }
    caplog.set_level("INFO", logger="kubetune_trainer.augment_generation")
    data, augmented, [result] = _augment(_spec(augmentation, INSTRUCTIONS_QA), tmp_path, monkeypatch, pvc_root)
    assert "(encoder-decoder)" in caplog.text
    chosen = round(len(data.train) * 0.5)
    dropped = result.total_dropped()
    assert (result.source_rows, result.generated, result.added + dropped) == (chosen, chosen * 2, chosen * 2)
    assert result.added > 0 and len(augmented.train) == len(data.train) + result.added
    assert result.model == f"pvc:{MODEL_CLAIM}/{TRANSLATION_PATH} -> pvc:{MODEL_CLAIM}/{TRANSLATION_PATH}"
    for row in augmented.train.select(range(len(data.train), len(augmented.train))):
        assert row["prompt"].startswith("### Instruction:\n") and row["completion"] in set(data.train["completion"])


def test_each_mix_source_is_augmented_before_the_mix_and_keeps_its_task_prefix(
    pvc_root, ending_model, instructions, monkeypatch, tmp_path
):
    mix = [
        {"name": "facts", "pvc": {"claimName": DATA_CLAIM, "path": INSTRUCTIONS}, "taskPrefix": "[facts] "},
        {"name": "quiz", "pvc": {"claimName": DATA_CLAIM, "path": INSTRUCTIONS_QA}, "taskPrefix": "[quiz] "},
    ]
    wire = base_spec()
    wire["dataset"] = {"mix": mix, "mixUntil": "all_exhausted", "evalFraction": 0.25, "augmentation": PARAPHRASE}
    spec = FineTuneJobSpec.model_validate(wire)
    monkeypatch.setenv(ENV_PVC_ROOT, str(pvc_root))
    sources = prepare_sources(spec.dataset, spec.training.seed)
    augmented, [result] = augment_sources(spec, sources, tmp_path, MAIN, CPU)
    assert result.source_rows == sum(round(len(source.train) * 0.25) for source in sources)
    assert result.generated == result.source_rows * 3 and result.added + result.total_dropped() == result.generated
    assert result.added > 0
    for before, after in zip(sources, augmented, strict=True):
        assert _rows(after.eval) == _rows(before.eval), "evaluation rows are never augmented"
        new = list(after.train)[len(before.train) :]
        prefix = "### Instruction:\n" + before.task_prefix
        assert all(row["prompt"].startswith(prefix) for row in new), (before.name, new[:2])
    added = [len(after.train) - len(before.train) for before, after in zip(sources, augmented, strict=True)]
    assert sum(added) == result.added
    mixed = combine_sources(spec.dataset, augmented, spec.training.seed)
    assert len(mixed.train) >= sum(len(source.train) for source in augmented)  # all_exhausted draws every row


def test_rows_without_a_prompt_to_rewrite_are_counted_and_load_no_model(
    pvc_root, ending_model, instructions, monkeypatch, tmp_path
):
    """When no chosen row has a prompt to rewrite, they are counted as notRewritable and no model is loaded."""

    def never(*args, **kwargs):
        raise AssertionError("no augmentation model may be loaded")

    monkeypatch.setattr("kubetune_trainer.augment.rewritable", lambda *args: None)
    monkeypatch.setattr(augment_generation.TextGenerator, "__init__", never)
    spec = _spec({"paraphrase": {"model": {"pvc": {"claimName": MODEL_CLAIM, "path": ENDING_PATH}}}, "fraction": 0.5})
    data, augmented, [result] = _augment(spec, tmp_path, monkeypatch, pvc_root)
    assert (result.not_rewritable, result.generated, result.added) == (round(len(data.train) * 0.5), 0, 0)
    assert _rows(augmented.train) == _rows(data.train)


def test_text_rows_are_refused_with_a_clear_message(pvc_root, monkeypatch, tmp_path):
    with pytest.raises(InvalidInputError, match="format text has no prompt to rewrite"):
        _augment(_spec({"paraphrase": {}}, "facts-text.jsonl"), tmp_path, monkeypatch, pvc_root)


def test_a_missing_augmentation_model_names_its_field(pvc_root, instructions, monkeypatch, tmp_path):
    spec = _spec({"paraphrase": {"model": {"pvc": {"claimName": MODEL_CLAIM, "path": "nowhere"}}}})
    with pytest.raises(Exception, match=r"spec\.dataset\.augmentation\.paraphrase\.model\.pvc: no model at"):
        _augment(spec, tmp_path, monkeypatch, pvc_root)


def test_a_training_run_reports_the_added_rows(pvc_root, ending_model, instructions, tmp_path):
    """The whole trainer: rows added reach metrics.json (copied to the report and .status) and the model card."""
    spec = base_spec(INSTRUCTIONS, training={"maxSteps": 2, "loggingSteps": 1})
    spec["dataset"] = {**spec["dataset"], "augmentation": PARAPHRASE}
    output = tmp_path / "output"
    assert run_in_process(write_spec(tmp_path, spec), output, pvc_root) == 0
    metrics = json.loads((output / ADAPTER_DIR / METRICS_FILE).read_text())
    [reported] = metrics["augmentation"]
    assert reported["kind"] == "paraphrase" and reported["added"] > 0
    card = (output / ADAPTER_DIR / "README.md").read_text()
    assert f"{reported['added']} by paraphrase with pvc:{MODEL_CLAIM}/{ENDING_PATH}" in card
    assert list((output / CACHE_DIR).glob("*.json")), "the rows are cached on the output volume"
