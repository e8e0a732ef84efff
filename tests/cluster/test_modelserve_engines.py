"""The vLLM engine's Deployment on the real control plane: its image, shared memory, start-up budget and settings
are accepted by the API server as rendered (no drift re-patch), and `auto` picks the engine from the GPUs."""

from __future__ import annotations

import json

from kubetune.operator.settings import DEFAULT_SERVER_VLLM_IMAGE

from tests.support.envtest.fixtures import RealCluster, RealOperatorControl
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import CONFIGMAPS, DEPLOYMENTS, MSV, SERVICES, KubeTestClient

from .helpers import exists, modelserve, operator_requests, wait_phase

TIMEOUT = 30


def test_vllm_engine_deployment_and_auto_selection(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    vllm = {"gpuMemoryUtilization": 0.8, "enforceEager": True, "startupSeconds": 1200}
    kube.create(
        MSV,
        ns,
        modelserve(
            ns,
            "fast",
            jobs=(),
            baseModel={"name": "org/base"},
            engine="auto",
            vllm=vllm,
            resources={"gpus": 2, "cpu": "1500m", "memory": "16Gi"},
        ),
    )
    kube.create(MSV, ns, modelserve(ns, "cpu", jobs=(), baseModel={"name": "org/base"}, engine="auto"))
    deployment = kube.wait_for(DEPLOYMENTS, ns, "fast", exists, TIMEOUT)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == DEFAULT_SERVER_VLLM_IMAGE
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OMP_NUM_THREADS"] == "1"  # 1.5 CPUs: whole cores only
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] == 1200
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    config = json.loads(kube.get(CONFIGMAPS, ns, "fast-config")["data"]["serve.json"])
    assert config["engine"] == "auto"  # the server checks the architecture and may fall back
    assert config["vllm"]["gpuMemoryUtilization"] == 0.8 and config["vllm"]["enforceEager"] is True

    cpu = kube.wait_for(DEPLOYMENTS, ns, "cpu", exists, TIMEOUT)
    assert cpu["spec"]["template"]["spec"]["containers"][0]["image"] != container["image"]
    assert json.loads(kube.get(CONFIGMAPS, ns, "cpu-config")["data"]["serve.json"])["engine"] == "transformers"

    kube.wait_for(SERVICES, ns, "fast", exists, TIMEOUT)
    since = control_plane.audit.offset()
    kubelet.deployment_ready(ns, "fast")
    wait_phase(kube, ns, "fast", "Ready", res=MSV)
    patches = [e.name for e in operator_requests(control_plane, since, "patch", "deployments")]
    assert patches == []  # what the API server stored is what was rendered: no drift
