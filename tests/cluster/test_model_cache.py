"""The namespace's shared model cache on the real control plane, with the real trainer and server run by the fake
kubelet against a Hub stand-in that counts every file it sends: the operator creates the cache claim (unowned), the
first trainer downloads the base model into it, and a second trainer and the server load it from there without
downloading a single file; deleting a FineTuneJob leaves the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubetune.api import runtime
from kubetune.operator import naming
from kubetune.operator.settings import OperatorSettings
from kubetune_trainer.data_formats import ALPACA_TEMPLATE_NO_INPUT
from openai import OpenAI

from tests.support.envtest.fixtures import RealCluster, RealOperatorControl, operator_settings_for
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.fake_hub import FakeHub
from tests.support.kube.server import DEPLOYMENTS, FTJ, JOBS, MSV, PVCS, KubeTestClient
from tests.support.tiny_model import build_tiny_model, write_facts_jsonl
from tests.trainer.helpers import LEARNING_TRAINING

from .helpers import delete, exists, gone, wait_phase

pytestmark = pytest.mark.slow

TIMEOUT = 60
REPO = "kubetune-test/tiny"
CACHE = "kubetune-models"


@pytest.fixture
def operator_settings(control_plane: RealCluster, ns: str) -> OperatorSettings:
    return operator_settings_for(control_plane, (ns,), model_cache_claim=CACHE)


def hub_job(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "baseModel": {"name": REPO},
            "dataset": {"pvc": {"claimName": "data", "path": "facts.jsonl"}, "format": "alpaca", "evalFraction": 0.1},
            "training": LEARNING_TRAINING,
            "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
        },
    }


def train(kube: KubeTestClient, kubelet: FakeKubelet, ns: str, name: str, root: Path, claims: Path) -> dict:
    kube.create(FTJ, ns, hub_job(ns, name))
    job = kube.wait_for(JOBS, ns, naming.job_name(name), exists, TIMEOUT, "to be created")
    run = kubelet.run_job(ns, naming.job_name(name), root, claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]
    assert wait_phase(kube, ns, name, "Succeeded", "Failed", timeout=TIMEOUT)["status"]["phase"] == "Succeeded"
    return job


def test_the_first_trainer_fills_the_cache_and_the_next_trainer_and_the_server_reuse_it(
    operator: RealOperatorControl,
    kube: KubeTestClient,
    kubelet: FakeKubelet,
    ns: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    claims = tmp_path / "claims"
    model = build_tiny_model(tmp_path / "hub" / "tiny")
    write_facts_jsonl(claims / "data" / "facts.jsonl", fmt="alpaca")
    with FakeHub({REPO: Path(model)}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)  # the pods run on this machine and inherit its environment
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")

        job = train(kube, kubelet, ns, "first", tmp_path / "first", claims)
        claim = kube.get(PVCS, ns, CACHE)
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and not claim["metadata"].get("ownerReferences")
        pod = job["spec"]["template"]["spec"]
        env = {item["name"]: item.get("value") for item in pod["containers"][0]["env"]}
        assert env["HF_HOME"] == env[runtime.ENV_MODEL_CACHE] == f"/mnt/kubetune/pvc/{CACHE}/huggingface"
        scratch = next(volume for volume in pod["volumes"] if volume["name"] == "scratch")
        assert scratch["emptyDir"]["sizeLimit"] == pod["containers"][0]["resources"]["requests"]["ephemeral-storage"]
        first = hub.file_downloads(REPO)
        assert first > 0 and max(hub.downloads.values()) == 1, hub.downloads

        train(kube, kubelet, ns, "second", tmp_path / "second", claims)
        assert hub.file_downloads(REPO) == first, "the second trainer downloaded the model again"

        kube.create(
            MSV,
            ns,
            {
                "apiVersion": "kubetune.dev/v1alpha1",
                "kind": "ModelServe",
                "metadata": {"name": "facts-api", "namespace": ns},
                "spec": {
                    "adapters": [{"name": "facts", "fineTuneJobRef": {"name": "second"}}],
                    "resources": {"gpus": 0},
                },
            },
        )
        deployment = naming.server_name("facts-api")
        kube.wait_for(DEPLOYMENTS, ns, deployment, exists, TIMEOUT, "to be created")
        server = kubelet.serve_deployment(ns, deployment, tmp_path / "server", claims_root=claims)
        try:
            wait_phase(kube, ns, "facts-api", "Ready", res=MSV, timeout=TIMEOUT)
            client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
            prompt = ALPACA_TEMPLATE_NO_INPUT.format(instruction="What is the capital of Kubernetia?")
            answer = client.completions.create(model="facts", prompt=prompt, max_tokens=4, temperature=0)
            assert answer.choices[0].text is not None
        finally:
            server.stop()
        assert hub.file_downloads(REPO) == first, "the server downloaded the model again"

    delete(kube, FTJ, ns, "first")
    kube.wait_for(FTJ, ns, "first", gone, TIMEOUT, "to be deleted")
    assert kube.find(PVCS, ns, CACHE) is not None, "the cache outlives the FineTuneJobs that filled it"
