"""The kubelet helper runs a pod's real command on the host, with env and volumes mapped to folders."""

from __future__ import annotations

import base64
import textwrap

from tests.support.kube import hostrun
from tests.support.kube.server import CONFIGMAPS, DEPLOYMENTS, JOBS, SECRETS

NS = "default"
SCRIPT = textwrap.dedent(
    """
    import os, pathlib, sys
    out = pathlib.Path(sys.argv[sys.argv.index("--output") + 1])
    config = pathlib.Path("/etc/app/settings.txt".replace("/etc/app", os.environ["CONFIG_DIR"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.txt").write_text(config.read_text() + "|" + os.environ["TOKEN"] + "|" + os.environ["NS"])
    pathlib.Path(os.environ["KUBETUNE_TERMINATION_LOG"]).write_text('{"reason": "Done"}')
    sys.exit(int(os.environ["EXIT_CODE"]))
    """
)


def _pod(exit_code: int) -> dict:
    return {
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "unused",
                    "command": ["python", "-c", SCRIPT],
                    "args": ["--output", "/mnt/kubetune/pvc/results/run1"],
                    "env": [
                        {"name": "CONFIG_DIR", "value": "/etc/app"},
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
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "app"}},
                {"name": "results", "persistentVolumeClaim": {"claimName": "results"}},
            ],
        }
    }


def _inputs(kube) -> None:
    kube.create(CONFIGMAPS, NS, {"metadata": {"name": "app"}, "data": {"settings.txt": "hello"}})
    kube.create(SECRETS, NS, {"metadata": {"name": "creds"}, "data": {"token": base64.b64encode(b"s3cret").decode()}})


def test_runs_the_container_command_with_mapped_volumes_and_env(kube, tmp_path):
    _inputs(kube)
    host = hostrun.prepare(kube, NS, _pod(0), tmp_path / "pod", claims_root=tmp_path / "claims")
    result = hostrun.run(host, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "claims/results/run1/result.txt").read_text() == "hello|s3cret|default"
    assert result.message == '{"reason": "Done"}'


def test_a_failing_job_container_fails_the_job_with_its_message(kube, kubelet, tmp_path):
    _inputs(kube)
    job = {
        "metadata": {"name": "work"},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"app": "work"}}, **_pod(3)}},
    }
    kube.create(JOBS, NS, job)
    result = kubelet.run_job(NS, "work", tmp_path / "pod", claims_root=tmp_path / "claims")
    assert result.returncode == 3
    status = kube.get(JOBS, NS, "work")["status"]
    assert [c["reason"] for c in status["conditions"]][-1] == "BackoffLimitExceeded"
    pod = kubelet.pods_of(NS, "work")[0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["message"] == '{"reason": "Done"}'


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


def test_serves_a_deployment_on_the_host_until_ready(kube, kubelet, tmp_path):
    kube.create(CONFIGMAPS, NS, {"metadata": {"name": "cfg"}, "data": {"serve.json": '{"ok": true}'}})
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
    deployment = {
        "metadata": {"name": "srv"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "srv"}},
            "template": {
                "metadata": {"labels": {"app": "srv"}},
                "spec": {"containers": [container], "volumes": [{"name": "config", "configMap": {"name": "cfg"}}]},
            },
        },
    }
    kube.create(DEPLOYMENTS, NS, deployment)
    server = kubelet.serve_deployment(NS, "srv", tmp_path, timeout=30)
    try:
        import httpx

        assert httpx.get(server.url + "/ready").text == '{"ok": true}'
        assert kube.get(DEPLOYMENTS, NS, "srv")["status"]["readyReplicas"] == 1
    finally:
        server.stop()
