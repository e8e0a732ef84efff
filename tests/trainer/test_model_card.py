"""The adapter's card says what was run: a usable example prompt, the adapted layers, the epochs actually
trained, the rows maxSeqLength cut or dropped, and how ROUGE-L/BLEU were computed."""

from __future__ import annotations

from datasets import Dataset
from kubetune.api import FineTuneJobSpec, TrainingMetrics
from kubetune_trainer.data import PreparedData
from kubetune_trainer.data_formats import ALPACA_TEMPLATE
from kubetune_trainer.generation_eval import METHOD
from kubetune_trainer.model_card import render_model_card
from kubetune_trainer.sft_trainer import LengthReport

from tests.trainer.helpers import base_spec

KOREAN_TEMPLATE = "{instruction}\n문장: {input}\n감정:\n"


def prepared(template: str | None, fmt: str = "alpaca") -> PreparedData:
    rows = Dataset.from_list([{"prompt": "p", "completion": "c"}] * 18)
    return PreparedData(rows, rows.select(range(2)), fmt, template, 0, "pvc:data/x.jsonl", "sha256:0")


def card(data: PreparedData, metrics: TrainingMetrics | None = None, **kwargs) -> str:
    spec = FineTuneJobSpec.model_validate(
        base_spec(lora={"r": 8, "layersToTransform": [2, 3]}, training={"epochs": 3, "maxSteps": 30})
    )
    manifest = {"precision": "fp32", "device": "cpu"}
    return render_model_card(spec, data, metrics or TrainingMetrics(), manifest, **kwargs)


def test_the_usage_prompt_fills_every_placeholder():
    assert "prompt = 'Your instruction\\n문장: Your input\\n감정:\\n'" in card(prepared(KOREAN_TEMPLATE))
    default = card(prepared(ALPACA_TEMPLATE))
    assert "### Input:\\nYour input\\n\\n### Response:\\n" in default


def test_layers_epochs_run_and_length_counts_are_shown():
    lengths = {"train": LengthReport(rows=18, cut=3, dropped=8, longest=300), "eval": LengthReport(2, 0, 2, 310)}
    text = card(prepared(ALPACA_TEMPLATE), lengths=lengths, epochs_run=2.5)
    assert "(layers 2, 3 only)" in text
    assert "| Epochs / max steps | 2.50 (of 3 planned) / 30 |" in text
    assert "10 training rows, 0 evaluation rows" in text
    assert "training: 3 cut, 8 dropped (prompt alone too long); evaluation: 0 cut, 2 dropped" in text


def test_the_generation_metric_method_is_named_when_scored():
    assert METHOD not in card(prepared(ALPACA_TEMPLATE))
    assert f"ROUGE-L and BLEU: {METHOD}." in card(prepared(ALPACA_TEMPLATE), TrainingMetrics(rouge_l=0.5, bleu=0.2))


def test_the_card_embeds_the_loss_curves_and_names_the_review_sheet():
    plain = card(prepared(ALPACA_TEMPLATE))
    assert "![" not in plain and "human-eval.csv" not in plain
    text = card(prepared(ALPACA_TEMPLATE), loss_curves="loss-curves.png", human_eval_rows=8)
    assert "![Train and eval loss against the training step](loss-curves.png)" in text
    assert "A human-evaluation sheet with 8 held-out prompts" in text and "`human-eval.csv`" in text
