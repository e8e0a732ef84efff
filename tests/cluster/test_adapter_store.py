"""Adapters that do not depend on the trainer's volume, on the real control plane: with an adapter store claim
configured, every trainer also publishes its adapter there and servers mount only the store (read-only), so a
second FineTuneJob's adapter added to a running two-replica ModelServe is hot-loaded without a new pod template,
and deleting a FineTuneJob leaves its served adapter in place. Replicas that cannot share a ReadWriteOnce claim are
refused with a clear condition; GPU servers roll out without a surge pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from kubetune.api import runtime
from kubetune.operator import naming
from kubetune.operator.settings import OperatorSettings
from kubetune_trainer.data_formats import ALPACA_TEMPLATE_NO_INPUT

from tests.support.envtest.fixtures import RealCluster, RealOperatorControl, operator_settings_for
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube import hostrun
from tests.support.kube.server import CONFIGMAPS, DEPLOYMENTS, FTJ, JOBS, MSV, PVCS, KubeTestClient
from tests.support.tiny_model import build_tiny_model, synthetic_facts, write_facts_jsonl
from tests.trainer.helpers import LEARNING_TRAINING

from .helpers import condition, delete, exists, gone, modelserve, wait_phase, wait_until

TIMEOUT = 60
STORE = "kubetune-adapters"


@pytest.fixture
def operator_settings(control_plane: RealCluster, ns: str) -> OperatorSettings:
    return operator_settings_for(control_plane, (ns,), adapter_store_claim=STORE)


def claim(ns: str, name: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": "1Gi"}}},
    }


def tiny_job(ns: str, name: str, seed: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "baseModel": {"pvc": {"claimName": "models", "path": "tiny"}},
            "dataset": {"pvc": {"claimName": "data", "path": "facts.jsonl"}, "format": "alpaca", "evalFraction": 0.1},
            "training": {**LEARNING_TRAINING, "seed": seed},
            "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
        },
    }


def train(kube: KubeTestClient, kubelet: FakeKubelet, ns: str, name: str, seed: int, root: Path, claims: Path):
    kube.create(FTJ, ns, tiny_job(ns, name, seed))
    kube.wait_for(JOBS, ns, naming.job_name(name), exists, TIMEOUT, "to be created")
    run = kubelet.run_job(ns, naming.job_name(name), root, claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]
    done = wait_phase(kube, ns, name, "Succeeded", "Failed", timeout=TIMEOUT)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    uid = done["metadata"]["uid"]
    assert done["status"]["output"]["pvc"] == {"claimName": STORE, "path": f"adapters/{name}/{uid}"}
    assert (claims / STORE / "adapters" / name / uid / "adapter_config.json").is_file()
    return done


def correct_answers(url: str, model: str) -> int:
    facts = synthetic_facts()
    prompts = [ALPACA_TEMPLATE_NO_INPUT.format(instruction=fact.question) for fact in facts]
    body = {"model": model, "prompt": prompts, "max_tokens": 4, "temperature": 0}
    choices = httpx.post(f"{url}/v1/completions", json=body, timeout=120).raise_for_status().json()["choices"]
    answers = [choice["text"].strip() for choice in sorted(choices, key=lambda choice: choice["index"])]
    return sum(answer.startswith(fact.answer) for answer, fact in zip(answers, facts, strict=True))


@pytest.mark.slow
def test_adapters_come_from_the_store_are_hot_added_and_outlive_their_finetunejob(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str, tmp_path: Path
) -> None:
    claims = tmp_path / "claims"
    build_tiny_model(claims / "models" / "tiny")
    write_facts_jsonl(claims / "data" / "facts.jsonl", fmt="alpaca")
    kube.create(PVCS, ns, claim(ns, "models", "ReadOnlyMany"))
    train(kube, kubelet, ns, "alpha", 1, tmp_path / "alpha", claims)
    store = kube.get(PVCS, ns, STORE)
    assert store["spec"]["accessModes"] == ["ReadWriteMany"] and not store["metadata"].get("ownerReferences")

    kube.create(MSV, ns, modelserve(ns, jobs=("alpha",), replicas=2, resources={"gpus": 0}))
    server_name = naming.server_name("chat")
    deployment = kube.wait_for(DEPLOYMENTS, ns, server_name, exists, TIMEOUT, "to be created")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    store_volume = next(v for v in volumes if v.get("persistentVolumeClaim", {}).get("claimName") == STORE)
    assert store_volume["persistentVolumeClaim"]["readOnly"] is True
    assert not any(v.get("persistentVolumeClaim", {}).get("claimName") == "alpha-output" for v in volumes)
    server = kubelet.serve_deployment(ns, server_name, tmp_path / "server", claims_root=claims)
    try:
        wait_phase(kube, ns, "chat", "Ready", res=MSV, timeout=TIMEOUT)
        assert correct_answers(server.url, "alpha") >= 15
        before = kube.get(DEPLOYMENTS, ns, server_name)

        # A second FineTuneJob's adapter: only serve.json changes, the running replicas load it.
        train(kube, kubelet, ns, "beta", 2, tmp_path / "beta", claims)
        adapters = [{"name": job, "fineTuneJobRef": {"name": job}} for job in ("alpha", "beta")]
        kube.patch(MSV, ns, "chat", {"spec": {"adapters": adapters}})
        kube.wait_for(CONFIGMAPS, ns, "chat-config", lambda cm: "adapters/beta/" in cm["data"]["serve.json"], TIMEOUT)
        wait_phase(kube, ns, "chat", "Ready", res=MSV, timeout=TIMEOUT)
        after = kube.get(DEPLOYMENTS, ns, server_name)
        assert after["metadata"]["generation"] == before["metadata"]["generation"], "no new pod template: no restart"
        hostrun.refresh_configmaps(kube, ns, after["spec"]["template"], tmp_path / "server")
        wait_until(
            lambda: "beta" in {m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]},
            "for the running server to load beta",
            TIMEOUT,
        )
        assert correct_answers(server.url, "beta") >= 15
        assert server.process.poll() is None, "the same server process serves both"

        # Deleting (or Argo CD pruning) a FineTuneJob takes its output claim, not the adapter the server uses.
        delete(kube, FTJ, ns, "alpha")
        kube.wait_for(FTJ, ns, "alpha", gone, TIMEOUT, "to be deleted")
        kept = kube.wait_for(
            MSV,
            ns,
            "chat",
            lambda m: "is gone" in (condition(m, "AdaptersReady") or {}).get("message", ""),
            TIMEOUT,
            "to note the deleted FineTuneJob",
        )
        assert kept["status"]["phase"] == "Ready" and condition(kept, "AdaptersReady")["status"] == "True"
        assert [a["name"] for a in kept["status"]["adapters"]] == ["alpha", "beta"]
        assert kube.get(DEPLOYMENTS, ns, server_name)["metadata"]["generation"] == before["metadata"]["generation"]
        assert correct_answers(server.url, "alpha") >= 15
    finally:
        server.stop()


def test_replicas_that_cannot_share_a_readwriteonce_claim_are_refused(
    operator: RealOperatorControl, kube: KubeTestClient, ns: str
) -> None:
    kube.create(PVCS, ns, claim(ns, "team-adapters", "ReadWriteOnce"))
    body = modelserve(
        ns,
        jobs=(),
        replicas=2,
        baseModel={"name": "Qwen/Qwen2.5-0.5B-Instruct"},
        adapters=[{"name": "support", "pvc": {"claimName": "team-adapters", "path": "support"}}],
    )
    kube.create(MSV, ns, body)
    refused = wait_phase(kube, ns, "chat", "Failed", res=MSV, timeout=TIMEOUT)
    reason = condition(refused, "AdaptersReady")
    assert reason["reason"] == "StorageNotShared" and "team-adapters (ReadWriteOnce)" in reason["message"]
    assert condition(refused, "Ready")["status"] == "False"
    assert kube.find(DEPLOYMENTS, ns, naming.server_name("chat")) is None

    kube.patch(MSV, ns, "chat", {"spec": {"replicas": 1}})
    kube.wait_for(DEPLOYMENTS, ns, naming.server_name("chat"), exists, TIMEOUT, "to be created at replicas 1")


def test_gpu_servers_roll_out_without_a_surge_pod(operator: RealOperatorControl, kube: KubeTestClient, ns: str):
    body = modelserve(ns, jobs=(), baseModel={"name": "Qwen/Qwen2.5-0.5B-Instruct"}, resources={"gpus": 1})
    kube.create(MSV, ns, body)
    deployment = kube.wait_for(DEPLOYMENTS, ns, naming.server_name("chat"), exists, TIMEOUT, "to be created")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    scratch = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "scratch")
    assert scratch["emptyDir"]["sizeLimit"] == "50Gi" == container["resources"]["requests"]["ephemeral-storage"]
    assert runtime.ENV_MODEL_CACHE not in {item["name"] for item in container["env"]}
