"""One YAML from fine-tune to answer, on the real control plane.

The operator runs for real, as its ServiceAccount, against kube-apiserver. The real Job controller creates the
trainer pod (admitted under PodSecurity `restricted`); the fake kubelet runs that pod's own container command and
env on this machine (claims as folders) and ends it with the real exit code and termination message, which the
Job controller and the operator take from there. Then the real ReplicaSet controller's server pod is run the same
way. Any difference between what the operator renders, what the API server admits and what the images expect
(paths, env names, args) fails here. The answer must be the one the adapter learned.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubetune.operator import naming
from kubetune_trainer.data_formats import ALPACA_TEMPLATE_NO_INPUT
from openai import OpenAI

from tests.support.envtest.fixtures import RealOperatorControl
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import DEPLOYMENTS, FTJ, JOBS, MSV, KubeTestClient
from tests.support.tiny_model import build_tiny_model, synthetic_facts, write_facts_jsonl
from tests.trainer.helpers import LEARNING_TRAINING

from .helpers import exists, wait_phase

pytestmark = pytest.mark.slow

TIMEOUT = 30
PIPELINE = f"""
apiVersion: kubetune.dev/v1alpha1
kind: FineTuneJob
metadata:
  name: facts
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
spec:
  adapters:
    - name: facts-adapter
      fineTuneJobRef: {{name: facts}}
  generation: {{temperature: 0, maxNewTokens: 8}}
  resources: {{gpus: 0}}
"""


def _apply(kube: KubeTestClient, ns: str, text: str) -> None:
    """Create each document in `ns`, as `kubectl apply -n ns -f` would."""
    for document in yaml.safe_load_all(text):
        kube.create(FTJ if document["kind"] == "FineTuneJob" else MSV, ns, document)


def test_finetune_serve_and_answer(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str, tmp_path: Path
) -> None:
    claims = tmp_path / "claims"
    build_tiny_model(claims / "models" / "tiny")
    write_facts_jsonl(claims / "data" / "facts.jsonl", fmt="alpaca")
    _apply(kube, ns, PIPELINE)

    serve = wait_phase(kube, ns, "facts-api", "WaitingForAdapters", res=MSV)
    assert "facts" in serve["status"]["message"]

    job_name = naming.job_name("facts")
    kube.wait_for(JOBS, ns, job_name, exists, TIMEOUT, "to be created")
    run = kubelet.run_job(ns, job_name, tmp_path / "trainer-pod", claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]

    job = wait_phase(kube, ns, "facts", "Succeeded", "Failed")
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["metrics"]["steps"] == LEARNING_TRAINING["maxSteps"]
    assert status["metrics"]["evalLoss"] < status["metrics"]["trainLoss"] * 5
    adapter = status["output"]["pvc"]
    assert (claims / adapter["claimName"] / adapter["path"] / "adapter_config.json").is_file()

    deployment = naming.server_name("facts-api")
    kube.wait_for(DEPLOYMENTS, ns, deployment, exists, TIMEOUT, "to be created")
    server = kubelet.serve_deployment(ns, deployment, tmp_path / "server-pod", claims_root=claims)
    try:
        ready = wait_phase(kube, ns, "facts-api", "Ready", res=MSV)
        assert ready["status"]["url"] == f"http://{deployment}.{ns}.svc.cluster.local:8000/v1"
        assert [a["name"] for a in ready["status"]["adapters"]] == ["facts-adapter"]
        loaded = kube.wait_for(  # as the server pod reports it (GET /adapters on its pod IP), not as wished
            MSV, ns, "facts-api", lambda m: m["status"]["adapters"][0].get("state") == "Loaded", TIMEOUT, "Loaded"
        )
        assert loaded["status"]["adapters"][0]["loadedReplicas"] == 1

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
