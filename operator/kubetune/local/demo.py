"""`make demo`: fine-tune SmolLM2-135M-Instruct on the bundled Korean sentiment data, serve it, compare.

It runs the user's path (the local runner on examples/demo.yaml), then asks the running server for the
sentiment of every held-out row twice, once with the base model and once with the adapter, and prints
both accuracies on the same rows, then one answer through the OpenAI-compatible API.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .demo_model import DEMO_MODEL_ID, ensure_demo_model
from .runner import LocalRun, ServedModel

REPO = Path(__file__).resolve().parents[3]
DEMO_FILE = REPO / "examples" / "demo.yaml"
DEMO_CONFIGMAP = "kubetune-demo-data"
DATA_DIR = REPO / "examples" / "data"
LABEL_TOKENS = 12
PROMPTS_PER_REQUEST = 32


@dataclass(frozen=True)
class EvalRow:
    prompt: str
    label: str


def label_of(text: str) -> str:
    """The sentiment word an answer starts with ('긍정적', '부정적', '중립적'), or '' when there is none."""
    words = text.strip().split()
    return words[0] if words else ""


def held_out_rows(run: LocalRun) -> list[EvalRow]:
    """The trainer's own evaluation split, formatted exactly as in training."""
    from kubetune_trainer.data import prepare_data  # the trainer's split and prompt format, not a copy

    job = run.bundle.jobs[0]
    os.environ.update(run.volumes.env())
    prepared = prepare_data(job.spec.dataset, job.spec.training.seed)
    if prepared.eval is None:
        raise RuntimeError("the demo job holds out no evaluation rows (dataset.evalFraction is 0)")
    return [EvalRow(row["prompt"], label_of(row["completion"])) for row in prepared.eval]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def accuracy(server: ServedModel, model: str, rows: list[EvalRow]) -> float:
    """Share of rows whose greedy answer starts with the right sentiment word (prompts sent in batches)."""
    correct = 0
    for start in range(0, len(rows), PROMPTS_PER_REQUEST):
        chunk = rows[start : start + PROMPTS_PER_REQUEST]
        reply = _post(
            f"{server.base_url}/v1/completions",
            {"model": model, "prompt": [row.prompt for row in chunk], "max_tokens": LABEL_TOKENS, "temperature": 0},
        )
        answers = sorted(reply["choices"], key=lambda choice: choice["index"])
        correct += sum(label_of(choice["text"]) == row.label for choice, row in zip(answers, chunk, strict=True))
    return correct / len(rows)


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
        run.serve_all()
        server = run.servers[0]
        rows = held_out_rows(run)
        adapter = server.models[-1]
        print(f"\nHeld-out accuracy on {len(rows)} rows the adapter never saw (sentiment word of the answer):")
        base_score = accuracy(server, DEMO_MODEL_ID, rows)
        print(f"  base model {DEMO_MODEL_ID}: {base_score:6.1%}")
        tuned_score = accuracy(server, adapter, rows)
        print(f"  fine-tuned adapter {adapter}:       {tuned_score:6.1%}")
        print(f"  improvement: {100 * (tuned_score - base_score):+.1f} points")
        sample = rows[0]
        reply = _post(
            f"{server.base_url}/v1/completions",
            {"model": adapter, "prompt": sample.prompt, "max_tokens": 40, "temperature": 0},
        )
        print(f"\nOne request through the server (model={adapter}):")
        print(f"  prompt: {sample.prompt!r}")
        # A reply cut at max_tokens can end inside a multi-byte character; show only whole characters.
        print(f"  answer: {reply['choices'][0]['text'].rstrip(chr(0xFFFD))!r}")
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    print(
        "On a GPU cluster: kubectl apply -f examples/demo.yaml after setting resources.gpus: 1 in both documents "
        "and creating the data ConfigMap (see README)."
    )
    return 0
