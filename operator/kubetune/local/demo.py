"""`make demo`: fine-tune SmolLM2-135M-Instruct on the bundled Korean sentiment data, serve it, compare.

It runs the user's path (the local runner on examples/demo.yaml), then asks the running server for the
sentiment of every held-out row twice, once with the base model and once with the adapter, and prints, on the
same rows, accuracy, macro-F1 and recall per class of both and of always answering the training data's majority
class, a confusion table per model, the published checkpoint, and one answer through the OpenAI-compatible API.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .demo_metrics import CLASSES, Scores, class_of, majority_class, render_confusion, render_table, score
from .demo_model import DEMO_MODEL_ID, ensure_demo_model
from .runner import LocalRun, ServedModel

REPO = Path(__file__).resolve().parents[3]
DEMO_FILE = REPO / "examples" / "demo.yaml"
DEMO_CONFIGMAP = "kubetune-demo-data"
DATA_DIR = REPO / "examples" / "data"
LABEL_TOKENS = 16  # the adapter answers one token and EOS; the base model gets room to name a class in words
PROMPTS_PER_REQUEST = 32
GOAL_MACRO_F1 = 0.80
GOAL_RECALL = 0.60


@dataclass(frozen=True)
class EvalRow:
    prompt: str
    label: str


@dataclass(frozen=True)
class DemoData:
    """The trainer's own split, formatted exactly as in training: held-out rows and the training labels."""

    held_out: list[EvalRow]
    train_labels: list[str]


def demo_data(run: LocalRun) -> DemoData:
    from kubetune_trainer.data import prepare_data  # the trainer's split and prompt format, not a copy

    job = run.bundle.jobs[0]
    os.environ.update(run.volumes.env())
    prepared = prepare_data(job.spec.dataset, job.spec.training.seed)
    if prepared.eval is None:
        raise RuntimeError("the demo job holds out no evaluation rows (dataset.evalFraction is 0)")
    held_out = [EvalRow(row["prompt"], class_of(row["completion"])) for row in prepared.eval]
    return DemoData(held_out, [class_of(row["completion"]) for row in prepared.train])


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def answers(server: ServedModel, model: str, rows: list[EvalRow]) -> list[str]:
    """Greedy answers of `model` to every row's prompt, through the server (prompts sent in batches)."""
    texts: list[str] = []
    for start in range(0, len(rows), PROMPTS_PER_REQUEST):
        chunk = rows[start : start + PROMPTS_PER_REQUEST]
        reply = _post(
            f"{server.base_url}/v1/completions",
            {"model": model, "prompt": [row.prompt for row in chunk], "max_tokens": LABEL_TOKENS, "temperature": 0},
        )
        texts += [choice["text"] for choice in sorted(reply["choices"], key=lambda choice: choice["index"])]
    return texts


def goal_met(scores: Scores) -> bool:
    return scores.macro_f1 >= GOAL_MACRO_F1 and min(scores.recall.values()) >= GOAL_RECALL


def run_demo(workdir: Path, port: int) -> int:
    started = time.monotonic()
    hf_home = (workdir / "hf-home").resolve()
    ensure_demo_model(hf_home)
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    os.environ.update(env)
    with LocalRun(
        files=[DEMO_FILE], workdir=workdir, configmaps=[(DEMO_CONFIGMAP, DATA_DIR)], port=port, env=env
    ) as run:
        run.train_all()
        trained_at = time.monotonic()
        run.serve_all()
        server = run.servers[0]
        data = demo_data(run)
        rows = data.held_out
        truth = [row.label for row in rows]
        adapter = server.models[-1]
        majority = majority_class(data.train_labels)
        base_texts = answers(server, DEMO_MODEL_ID, rows)
        adapter_texts = answers(server, adapter, rows)
        table = [
            (f"majority class ({majority})", score(truth, [majority] * len(rows))),
            (f"base model {DEMO_MODEL_ID}", score(truth, [class_of(text) for text in base_texts])),
            (f"fine-tuned adapter {adapter}", score(truth, [class_of(text) for text in adapter_texts])),
        ]
        support = Counter(truth)
        print(
            f"\nSentiment of {len(rows)} held-out rows the adapter never saw "
            f"({', '.join(f'{label} {support[label]}' for label in CLASSES)}), "
            "scored by the class the answer names:"
        )
        print(render_table(table))
        for name, scores in table[1:]:
            print(f"\nConfusion of the {name.split(' ', 1)[0]} model (rows: true class, columns: answered class):")
            print(render_confusion(scores))
        metrics = run.trained[run.bundle.jobs[0].metadata.name].metrics
        if metrics.get("publishedStep") is not None:
            print(
                f"\nPublished checkpoint: step {metrics['publishedStep']} of {metrics.get('steps')}, the lowest eval "
                f"loss ({metrics.get('evalLoss', float('nan')):.4f}; training.loadBestModelAtEnd)"
            )
        adapter_scores = table[-1][1]
        verdict = "met" if goal_met(adapter_scores) else "NOT met"
        print(
            f"Goal macro-F1 >= {GOAL_MACRO_F1:.2f} and every recall >= {GOAL_RECALL:.2f}: {verdict} "
            f"(macro-F1 {adapter_scores.macro_f1:.3f}, lowest recall {min(adapter_scores.recall.values()):.3f})"
        )
        sample = rows[0]
        reply = _post(
            f"{server.base_url}/v1/completions",
            {"model": adapter, "prompt": sample.prompt, "max_tokens": 40, "temperature": 0},
        )
        print(f"\nOne request through the server (model={adapter}):")
        print(f"  prompt: {sample.prompt!r}")
        # A reply cut at max_tokens can end inside a multi-byte character; show only whole characters.
        print(f"  answer: {reply['choices'][0]['text'].rstrip(chr(0xFFFD))!r}")
    trained = run.trained[run.bundle.jobs[0].metadata.name]
    print("\nResults of the training run (what `kubetune results ftj/demo-sentiment` fetches on a cluster):")
    for what, path in trained.result_files():
        print(f"  {what}: {path}")
    print(
        f"\ndemo finished in {time.monotonic() - started:.0f} s "
        f"(model conversion and training {trained_at - started:.0f} s)"
    )
    print(
        "On a GPU cluster: kubectl apply -f examples/demo.yaml after setting resources.gpus: 1 in both documents "
        "and creating the data ConfigMap (see README)."
    )
    return 0
