"""dataset.mix on the real control plane: the server names the offending mix source, the trainer pod mounts every
source, a missing ConfigMap of any source shows on the FineTuneJob as a single dataset's does, and a real mixed run
(the trainer run by the fake kubelet) ends with each source's evaluation loss in status.metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubetune.operator import naming

from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import CONFIGMAPS, FTJ, JOBS, PODS, KubeTestClient
from tests.support.tiny_model import build_tiny_model, synthetic_facts, write_facts_jsonl
from tests.trainer.helpers import LEARNING_TRAINING

from .helpers import EVENTS, condition, exists, finetunejob, wait_phase, wait_until

TIMEOUT = 60
FACTS = {"name": "facts", "configMap": {"name": "facts", "key": "train.jsonl"}, "weight": 3}
SUMMARIES = {"name": "summaries", "configMap": {"name": "summaries", "key": "train.jsonl"}, "taskPrefix": "sum: "}
CORPUS = {"name": "corpus", "pvc": {"claimName": "corpus", "path": "docs"}}


def _dry_run(kube: KubeTestClient, ns: str, dataset: dict[str, Any]) -> tuple[int, str]:
    body = finetunejob(ns, dataset=dataset)
    response = kube.http.post(
        f"/apis/kubetune.dev/v1alpha1/namespaces/{ns}/finetunejobs", params={"dryRun": "All"}, json=body
    )
    return response.status_code, response.json().get("message", "")


def test_the_server_names_the_offending_mix_source(kube: KubeTestClient, ns: str):
    code, message = _dry_run(kube, ns, {"mix": [FACTS, {"name": "summaries", "weight": 2}]})
    assert code == 422 and "spec.dataset.mix[1]" in message
    assert "mix source summaries needs exactly one of hf, pvc, configMap, url" in message
    code, message = _dry_run(kube, ns, {"mix": [FACTS, {**SUMMARIES, "evalSplit": "test"}]})
    assert code == 422 and "mix source summaries: evalSplit is only valid with hf" in message
    code, message = _dry_run(kube, ns, {"mix": [FACTS, {**SUMMARIES, "name": "facts"}]})
    assert code == 422 and "the names of dataset.mix sources must be unique" in message
    code, message = _dry_run(kube, ns, {"mix": [FACTS, {**SUMMARIES, "weight": 0}]})
    assert code == 422 and "spec.dataset.mix[1].weight" in message
    assert _dry_run(kube, ns, {"mix": [FACTS, SUMMARIES, CORPUS], "mixUntil": "all_exhausted"})[0] == 201


def _failed_mount(kube: KubeTestClient, ns: str, pod: dict[str, Any], message: str) -> None:
    """The Event a kubelet posts when a pod's ConfigMap volume cannot be set up."""
    name = pod["metadata"]["name"]
    involved = {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns, "uid": pod["metadata"]["uid"]}
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.failedmount"},
        "involvedObject": involved,
        "reason": "FailedMount",
        "message": message,
        "type": "Warning",
        "source": {"component": "kubelet", "host": "envtest-node"},
        "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:00:00Z",
    }
    kube.create(EVENTS, ns, event)


def test_every_source_is_mounted_and_a_missing_configmap_of_the_second_shows(
    operator, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    kube.create(CONFIGMAPS, ns, {"metadata": {"name": "facts"}, "data": {"train.jsonl": "{}"}})
    kube.create(FTJ, ns, finetunejob(ns, dataset={"mix": [FACTS, SUMMARIES, CORPUS]}))
    job = naming.job_name("sentiment")
    template = kube.wait_for(JOBS, ns, job, exists, TIMEOUT)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in template["volumes"]}
    mounts = {m["name"]: m for m in template["containers"][0]["volumeMounts"]}
    by_source = {
        "facts": naming.volume_name("cm", "facts"),
        "summaries": naming.volume_name("cm", "summaries"),
        "corpus": naming.volume_name("pvc", "corpus"),
    }
    assert volumes[by_source["facts"]]["configMap"]["name"] == "facts"
    assert volumes[by_source["summaries"]]["configMap"]["name"] == "summaries"
    assert volumes[by_source["corpus"]]["persistentVolumeClaim"] == {"claimName": "corpus", "readOnly": True}
    assert mounts[by_source["summaries"]] == {
        "name": by_source["summaries"],
        "mountPath": "/mnt/kubetune/configmap/summaries",
        "readOnly": True,
    }

    # The real kubelet cannot set up the second source's ConfigMap volume: the FineTuneJob says so at once.
    pod = wait_until(lambda: next(iter(kube.list(PODS, ns, f"batch.kubernetes.io/job-name={job}")), None), "a pod")
    kubelet.bind(pod)
    volume = by_source["summaries"]
    stuck = f'MountVolume.SetUp failed for volume "{volume}" : configmap "summaries" not found'
    _failed_mount(kube, ns, pod, stuck)
    ftj = kube.wait_for(
        FTJ, ns, "sentiment", lambda f: stuck in ((f or {}).get("status") or {}).get("message", ""), TIMEOUT
    )
    assert ftj["status"]["phase"] == "Pending"
    running = condition(ftj, "Running") or {}
    assert running.get("reason") == "FailedMount" and 'configmap "summaries" not found' in running.get("message", "")


@pytest.mark.slow
def test_a_mixed_run_reports_each_sources_eval_loss_in_status(
    operator, kube: KubeTestClient, kubelet: FakeKubelet, ns: str, tmp_path: Path
):
    claims = tmp_path / "claims"
    build_tiny_model(claims / "models" / "tiny")
    write_facts_jsonl(claims / "corpus" / "docs" / "facts.jsonl", fmt="alpaca")
    quiz = "".join(json.dumps({"question": f.question, "answer": f.answer}) + "\n" for f in synthetic_facts() * 4)
    kube.create(CONFIGMAPS, ns, {"metadata": {"name": "quiz"}, "data": {"train.jsonl": quiz}})
    mix = [
        {**CORPUS, "weight": 3, "taskPrefix": "fact: "},
        {"name": "quiz", "configMap": {"name": "quiz", "key": "train.jsonl"}, "evalFraction": 0.25},
    ]
    spec = {
        "baseModel": {"pvc": {"claimName": "models", "path": "tiny"}},
        "dataset": {"mix": mix, "evalFraction": 0.1},
        "training": {**LEARNING_TRAINING, "maxSteps": 4, "loggingSteps": 2},
        "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
        "output": {"pvc": {"claimName": "results", "path": "mix"}},
    }
    body = {"apiVersion": "kubetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "mixed"}, "spec": spec}
    kube.create(FTJ, ns, body)
    job = naming.job_name("mixed")
    kube.wait_for(JOBS, ns, job, exists, TIMEOUT)
    run = kubelet.run_job(ns, job, tmp_path / "run", claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]
    done = wait_phase(kube, ns, "mixed", "Succeeded", "Failed", timeout=TIMEOUT)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    metrics = done["status"]["metrics"]
    sources = {source["name"]: source for source in metrics["sources"]}
    assert set(sources) == {"corpus", "quiz"}
    assert (sources["corpus"]["evalRows"], sources["quiz"]["evalRows"]) == (13, 16)  # 10% of 128, 25% of 64
    assert all(source["evalLoss"] > 0 and source["trainRows"] > 0 for source in sources.values())
    weighted = (sources["corpus"]["evalLoss"] * 13 + sources["quiz"]["evalLoss"] * 16) / 29
    assert metrics["evalLoss"] == pytest.approx(weighted, rel=1e-6)
