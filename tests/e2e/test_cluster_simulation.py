"""One YAML from fine-tune to answer, on a simulated cluster.

The operator runs for real against the mock API server. The kubelet helper runs the trainer Job's own
container command and env on this machine (claims as folders), then the server Deployment's, so any
difference between what the operator renders and what the images expect (paths, env names, args)
fails here. The answer must be the one the adapter learned.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubetune.operator import naming
from kubetune_trainer.data_formats import ALPACA_TEMPLATE_NO_INPUT
from openai import OpenAI

from tests.support.kube.server import DEPLOYMENTS, FTJ, JOBS, MSV, KubeTestClient
from tests.support.tiny_model import build_tiny_model, synthetic_facts, write_facts_jsonl
from tests.trainer.helpers import LEARNING_TRAINING

pytestmark = pytest.mark.slow

NAMESPACE = "team-a"
PIPELINE = f"""
apiVersion: kubetune.dev/v1alpha1
kind: FineTuneJob
metadata:
  name: facts
  namespace: {NAMESPACE}
spec:
  baseModel:
    pvc: {{claimName: models, path: tiny}}
  dataset:
    pvc: {{claimName: data, path: facts.jsonl}}
    format: alpaca
    evalFraction: 0.1
  training: {yaml.safe_dump(LEARNING_TRAINING, default_flow_style=True).strip()}
  resources: {{gpus: 0, cpu: "2", memory: 4Gi}}
---
apiVersion: kubetune.dev/v1alpha1
kind: ModelServe
metadata:
  name: facts-api
  namespace: {NAMESPACE}
spec:
  adapters:
    - name: facts-adapter
      fineTuneJobRef: {{name: facts}}
  generation: {{temperature: 0, maxNewTokens: 8}}
  resources: {{gpus: 0}}
"""


def _apply(kube: KubeTestClient, text: str) -> None:
    for document in yaml.safe_load_all(text):
        kube.create(FTJ if document["kind"] == "FineTuneJob" else MSV, NAMESPACE, document)


def _phase(*phases: str):
    return lambda obj: obj is not None and (obj.get("status") or {}).get("phase") in phases


def test_finetune_serve_and_answer(operator, kube: KubeTestClient, kubelet, tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    build_tiny_model(claims / "models" / "tiny")
    write_facts_jsonl(claims / "data" / "facts.jsonl", fmt="alpaca")
    _apply(kube, PIPELINE)

    serve = kube.wait_for(MSV, NAMESPACE, "facts-api", _phase("WaitingForAdapters"), 20, "to wait for its job")
    assert "facts" in serve["status"]["message"]

    job_name = naming.job_name("facts")
    kube.wait_for(JOBS, NAMESPACE, job_name, lambda obj: obj is not None, 20, "to be created")
    run = kubelet.run_job(NAMESPACE, job_name, tmp_path / "trainer-pod", claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]

    job = kube.wait_for(FTJ, NAMESPACE, "facts", _phase("Succeeded", "Failed"), 30, "to finish")
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["metrics"]["steps"] == LEARNING_TRAINING["maxSteps"]
    assert status["metrics"]["evalLoss"] < status["metrics"]["trainLoss"] * 5
    adapter = status["output"]["pvc"]
    assert (claims / adapter["claimName"] / adapter["path"] / "adapter_config.json").is_file()

    deployment = naming.server_name("facts-api")
    kube.wait_for(DEPLOYMENTS, NAMESPACE, deployment, lambda obj: obj is not None, 30, "to be created")
    server = kubelet.serve_deployment(NAMESPACE, deployment, tmp_path / "server-pod", claims_root=claims)
    try:
        ready = kube.wait_for(MSV, NAMESPACE, "facts-api", _phase("Ready"), 30, "to be ready")
        assert ready["status"]["url"].startswith("http://")
        assert [a["name"] for a in ready["status"]["adapters"]] == ["facts-adapter"]

        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        assert {model.id for model in client.models.list().data} >= {"facts-adapter"}
        facts = synthetic_facts()
        prompts = [ALPACA_TEMPLATE_NO_INPUT.format(instruction=fact.question) for fact in facts]
        tuned = client.completions.create(model="facts-adapter", prompt=prompts, max_tokens=4, temperature=0)
        answers = [choice.text.strip() for choice in sorted(tuned.choices, key=lambda choice: choice.index)]
        correct = sum(answer.startswith(fact.answer) for answer, fact in zip(answers, facts, strict=True))
        assert correct >= 15, answers
    finally:
        server.stop()
