"""Per-adapter state as the server sees it, on the real control plane: the operator asks each ready server pod
(GET /adapters by its pod IP) and the ModelServe's status says which adapters are loaded, which were refused and
why, and which a replica has not loaded yet, instead of repeating the list the operator asked for.

The server runs for real (the fake kubelet starts the Deployment's container on the host, on a loopback address
reported as the pod's IP); the real Deployment and ReplicaSet controllers own the pod. A hot-added adapter that
the server refuses (trained on another base model) shows as Refused with the server's reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.server.lora_factory import train_fact_adapter
from tests.support.binaries import kubectl
from tests.support.envtest.fixtures import RealCluster, RealOperatorControl
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import CONFIGMAPS, DEPLOYMENTS, MSV, KubeTestClient
from tests.support.tiny_model import build_tiny_model

from .helpers import condition, exists, wait_event, wait_until

pytestmark = pytest.mark.slow

TIMEOUT = 60  # a recheck backs off 5, 10, 20 s while a replica has yet to read its refreshed serve.json


def _adapter(name: str, folder: str) -> dict:
    return {"name": name, "pvc": {"claimName": "adapters", "path": folder}}


def _kubectl(cluster: RealCluster, workdir: Path, *args: str) -> str:
    config = cluster.plane.write_admin_kubeconfig(workdir / "admin.kubeconfig")
    done = subprocess.run([str(kubectl()), f"--kubeconfig={config}", *args], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _states(kube: KubeTestClient, ns: str) -> dict[str, tuple]:
    status = kube.get(MSV, ns, "tiny")["status"]
    return {a["name"]: (a.get("state"), a.get("loadedReplicas"), a.get("message")) for a in status["adapters"]}


def test_status_reports_each_adapter_as_the_server_serves_it(
    control_plane: RealCluster,
    operator: RealOperatorControl,
    kube: KubeTestClient,
    kubelet: FakeKubelet,
    ns: str,
    tmp_path: Path,
) -> None:
    claims = tmp_path / "claims"
    base = build_tiny_model(claims / "models" / "tiny")
    train_fact_adapter(base, claims / "adapters" / "a", steps=2)
    train_fact_adapter(base, claims / "adapters" / "b", seed=1, steps=2)
    shutil.copytree(claims / "adapters" / "a", claims / "adapters" / "foreign")
    config_file = claims / "adapters" / "foreign" / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": "org/other"}))

    serve = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "ModelServe",
        "metadata": {"name": "tiny", "namespace": ns},
        "spec": {
            "baseModel": {"pvc": {"claimName": "models", "path": "tiny"}},
            "adapters": [_adapter("first", "a")],
            "resources": {"gpus": 0},
            "generation": {"maxNewTokens": 4},
        },
    }
    kube.create(MSV, ns, serve)
    kube.wait_for(DEPLOYMENTS, ns, "tiny", exists, 30, "to be created")
    server = kubelet.serve_deployment(ns, "tiny", tmp_path / "server-pod", claims_root=claims)
    try:
        # What the docs tell users to wait on, and the `kubectl get msv` column, with the real kubectl.
        _kubectl(
            control_plane, tmp_path, "wait", "--for=condition=AdaptersLoaded", "msv/tiny", "-n", ns, "--timeout=60s"
        )
        assert _states(kube, ns) == {"first": ("Loaded", 1, None)}
        header, row = _kubectl(control_plane, tmp_path, "get", "msv", "tiny", "-n", ns).splitlines()
        assert header.split()[:4] == ["NAME", "PHASE", "ADAPTERS", "LOADED"] and row.split()[:4] == [
            "tiny",
            "Ready",
            "first",
            "True",
        ]

        # Two more adapters: the operator writes them to serve.json at once, but the replica has not read it yet
        # (the kubelet refreshes a mounted ConfigMap later): the status says so instead of claiming them served.
        adapters = [_adapter("first", "a"), _adapter("alien", "foreign"), _adapter("second", "b")]
        kube.patch(MSV, ns, "tiny", {"spec": {"adapters": adapters}})
        wait_until(
            lambda: "alien" in kube.get(CONFIGMAPS, ns, "tiny-config")["data"]["serve.json"], "serve.json updated"
        )
        pending = wait_until(lambda: len(states := _states(kube, ns)) == 3 and states, "three adapters", TIMEOUT)
        assert pending["first"] == ("Loaded", 1, None)
        assert pending["second"] == ("Pending", 0, "loaded on 0 of 1 ready server replica(s)")
        assert pending["alien"][0] == "Pending"

        server.refresh_config()  # the kubelet's refresh; the server applies it within its 2 s poll
        final = wait_until(
            lambda: (
                (states := _states(kube, ns))["second"][0] == "Loaded" and states["alien"][0] != "Pending" and states
            ),
            "the server's verdicts",
            TIMEOUT,
        )
        assert final["first"] == ("Loaded", 1, None) and final["second"] == ("Loaded", 1, None)
        state, replicas, message = final["alien"]
        assert (state, replicas) == ("Refused", 0) and "org/other" in message, final["alien"]
        msv = kube.get(MSV, ns, "tiny")
        loaded = condition(msv, "AdaptersLoaded")
        assert (loaded["status"], loaded["reason"]) == ("False", "AdapterRefused") and "'alien'" in loaded["message"]
        assert msv["status"]["phase"] == "Ready"  # the other adapters and the base still serve
        assert wait_event(kube, ns, "tiny", "AdapterRefused").count("AdapterRefused") == 1  # kubectl describe

        # The container restarts (as a new replica would start): it reads serve.json with the refused adapter at
        # start, serves the rest and reports the same, instead of crash-looping where the running one served.
        server.stop()
        pod_ip = server.url.split("//")[1].split(":")[0]
        server = kubelet.serve_deployment(ns, "tiny", tmp_path / "server-pod", claims_root=claims, pod_ip=pod_ip)
        states = {a["name"]: a["state"] for a in httpx.get(f"{server.url}/adapters").json()["adapters"]}
        assert states == {"first": "Loaded", "alien": "Refused", "second": "Loaded"}
    finally:
        server.stop()
