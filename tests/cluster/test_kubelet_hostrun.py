"""The kubelet helper runs a pod's real command on the host, with env and volumes mapped to folders, for pods the
real Job and ReplicaSet controllers created (after a real server's admission added its service-account volume)."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path
from typing import Any

import httpx

from tests.support.envtest.fixtures import RealCluster
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube import hostrun
from tests.support.kube.server import CONFIGMAPS, DEPLOYMENTS, JOBS, SECRETS, KubeTestClient

SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SCRIPT = textwrap.dedent(
    """
    import os, pathlib, sys
    out = pathlib.Path(sys.argv[sys.argv.index("--output") + 1])
    config = pathlib.Path("/etc/app/settings.txt".replace("/etc/app", os.environ["CONFIG_DIR"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.txt").write_text(config.read_text() + "|" + os.environ["TOKEN"] + "|" + os.environ["NS"])
    account = pathlib.Path(os.environ["ACCOUNT_DIR"])
    if account.is_dir():
        (out / "account-namespace").write_text((account / "namespace").read_text())
        (out / "account-token").write_text((account / "token").read_text())
    pathlib.Path(os.environ["KUBETUNE_TERMINATION_LOG"]).write_text('{"reason": "Done"}')
    sys.exit(int(os.environ["EXIT_CODE"]))
    """
)


def _restricted(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """What PodSecurity `restricted` (the test namespaces' level) demands of every pod and container."""
    pod_spec["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in pod_spec["containers"]:
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod_spec


def _pod(exit_code: int) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "unused",
        "command": ["python", "-c", SCRIPT],
        "args": ["--output", "/mnt/kubetune/pvc/results/run1"],
        "env": [
            {"name": "CONFIG_DIR", "value": "/etc/app"},
            {"name": "ACCOUNT_DIR", "value": SERVICE_ACCOUNT_DIR},
            {"name": "EXIT_CODE", "value": str(exit_code)},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app", "readOnly": True},
            {"name": "results", "mountPath": "/mnt/kubetune/pvc/results"},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    volumes = [
        {"name": "config", "configMap": {"name": "app"}},
        {"name": "results", "persistentVolumeClaim": {"claimName": "results"}},
    ]
    return {"spec": _restricted({"restartPolicy": "Never", "containers": [container], "volumes": volumes})}


def _inputs(kube: KubeTestClient, ns: str) -> None:
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "app"},
        "data": {"settings.txt": "hello"},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "data": {"token": base64.b64encode(b"s3cret").decode()},
    }
    kube.create(CONFIGMAPS, ns, configmap)
    kube.create(SECRETS, ns, secret)


def test_runs_the_container_command_with_mapped_volumes_and_env(kube: KubeTestClient, ns: str, tmp_path: Path):
    _inputs(kube, ns)
    host = hostrun.prepare(kube, ns, _pod(0), tmp_path / "pod", claims_root=tmp_path / "claims")
    result = hostrun.run(host, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "claims/results/run1/result.txt").read_text() == f"hello|s3cret|{ns}"
    assert result.message == '{"reason": "Done"}'


def _whoami(control_plane: RealCluster, token: str) -> str:
    """The user the API server authenticates `token` as (a SelfSubjectReview needs no permission)."""
    client = control_plane.plane.token_client(token)
    try:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        review = client._check(client.http.post(SELF_SUBJECT_REVIEWS, json=body))
        return review["status"]["userInfo"]["username"]
    finally:
        client.close()


def _failed(job: dict[str, Any] | None) -> bool:
    conditions = ((job or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)


def test_a_failing_job_container_fails_the_job_with_its_message(
    control_plane: RealCluster, kube: KubeTestClient, kubelet: FakeKubelet, ns: str, tmp_path: Path
):
    _inputs(kube, ns)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "work"},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"app": "work"}}, **_pod(3)}},
    }
    kube.create(JOBS, ns, job)
    claims = tmp_path / "claims"
    result = kubelet.run_job(ns, "work", tmp_path / "pod", claims_root=claims)
    assert result.returncode == 3
    job = kube.wait_for(JOBS, ns, "work", _failed, 30, what="to fail")
    assert [c["reason"] for c in job["status"]["conditions"]][-1] == "BackoffLimitExceeded"
    pod = kubelet.pods_of(ns, "work")[0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["message"] == '{"reason": "Done"}'

    # The service-account volume the API server's admission added holds the namespace and a real, working token.
    assert any(v["name"].startswith(hostrun.SERVICE_ACCOUNT_VOLUME_PREFIX) for v in pod["spec"]["volumes"])
    assert (claims / "results/run1/account-namespace").read_text() == ns
    token = (claims / "results/run1/account-token").read_text()
    assert _whoami(control_plane, token) == f"system:serviceaccount:{ns}:default"


SERVER = textwrap.dedent(
    """
    import http.server, os
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ready" else 404)
            self.end_headers()
            self.wfile.write(open(os.environ["KUBETUNE_SERVE_CONFIG"]).read().encode())
        def log_message(self, *args):
            pass
    http.server.HTTPServer((os.environ["KUBETUNE_HOST"], int(os.environ["KUBETUNE_PORT"])), Handler).serve_forever()
    """
)


def test_serves_a_deployment_on_the_host_until_ready(
    kube: KubeTestClient, kubelet: FakeKubelet, ns: str, tmp_path: Path
):
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"serve.json": "{}"}}
    kube.create(CONFIGMAPS, ns, configmap)
    container = {
        "name": "server",
        "image": "unused",
        "command": ["python", "-c", SERVER],
        "env": [
            {"name": "KUBETUNE_SERVE_CONFIG", "value": "/etc/kubetune/serve.json"},
            {"name": "KUBETUNE_PORT", "value": "8000"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8000}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/kubetune"}],
    }
    pod_spec = _restricted({"containers": [container], "volumes": [{"name": "config", "configMap": {"name": "cfg"}}]})
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "srv"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "srv"}},
            "template": {"metadata": {"labels": {"app": "srv"}}, "spec": pod_spec},
        },
    }
    kube.create(DEPLOYMENTS, ns, deployment)
    server = kubelet.serve_deployment(ns, "srv", tmp_path, timeout=30)
    try:
        assert httpx.get(server.url + "/ready").text == "{}"
        status = kube.get(DEPLOYMENTS, ns, "srv")["status"]
        assert status["readyReplicas"] == 1 and status["availableReplicas"] == 1
    finally:
        server.stop()
