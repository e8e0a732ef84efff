"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager (envtest style).

The binaries come from the folder named by KUBEBUILDER_ASSETS, the convention of controller-runtime's envtest
(`setup-envtest use 1.36 -p path` prints one; here `../shared/envtest/setup.sh` does). There is no scheduler and
no kubelet: `kubelet.FakeKubelet` binds pods to a fake Node and writes their status, as kwok does.

The API server runs with RBAC, the default admission chain plus OwnerReferencesPermissionEnforcement (as on
OpenShift), and an audit log at level Metadata: who called what, and the response code (`audit.AuditLog`).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from ..kube.server import TEST_AGENT, KubeTestClient
from .pki import Pki

ASSETS_ENV = "KUBEBUILDER_ASSETS"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
HOW_TO_GET = (
    f"the real-control-plane tests need {ASSETS_ENV}: a folder with {', '.join(BINARIES)} "
    '(here: export KUBEBUILDER_ASSETS="$(../shared/envtest/setup.sh)"; elsewhere: '
    'export KUBEBUILDER_ASSETS="$(setup-envtest use 1.36 -p path)")'
)
# The real controllers the operator depends on: owner-reference garbage collection, namespace deletion,
# ServiceAccounts and their tokens, Jobs (pods, backoffLimit, podFailurePolicy, activeDeadlineSeconds, suspend),
# TTL-after-finished, Deployments and ReplicaSets, and the PVC-protection finalizer's removal.
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "job-controller",
    "ttl-after-finished-controller",
    "deployment-controller",
    "replicaset-controller",
    "persistentvolumeclaim-protection-controller",
)
ADMISSION_PLUGINS = ("OwnerReferencesPermissionEnforcement",)
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
ADMIN_USER = "kubetune-envtest-admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"


REQUIRE_ENV = "KUBETUNE_REQUIRE_ENVTEST"


def require_assets_or_skip() -> Path:
    """The assets folder; without it the calling test is skipped with how to get the binaries, or fails where
    KUBETUNE_REQUIRE_ENVTEST=1 (CI: a skipped real-server tier would prove nothing)."""
    import pytest

    folder = assets_folder()
    if folder is not None:
        return folder
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {HOW_TO_GET}")
    pytest.skip(HOW_TO_GET)


def assets_folder() -> Path | None:
    """The envtest binaries' folder, or None when KUBEBUILDER_ASSETS is unset or incomplete."""
    value = os.environ.get(ASSETS_ENV, "").strip()
    if not value:
        return None
    folder = Path(value)
    return folder if all((folder / name).is_file() for name in BINARIES) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ControlPlane:
    """One running control plane in `workdir`; start once per test session (about 10 s), then share it."""

    def __init__(
        self,
        assets: Path,
        workdir: Path,
        controllers: tuple[str, ...] = CONTROLLERS,
        admission_plugins: tuple[str, ...] = ADMISSION_PLUGINS,
    ) -> None:
        self.assets, self.workdir = assets, workdir
        self.controllers, self.admission_plugins = controllers, admission_plugins
        self.processes: dict[str, subprocess.Popen] = {}
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.audit_log = workdir / "audit.log"
        self.pki: Pki | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(
        self, timeout: float = 60, before_controllers: Callable[[ControlPlane], None] | None = None
    ) -> ControlPlane:
        """Start etcd and the API server, run `before_controllers` (apply CRDs there: the garbage collector
        discovers resources created after it started only at its next 30 s discovery pass, and until then
        ignores owners of those kinds), then the controller manager."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = Pki.create(
            self.workdir / "pki",
            {"admin": f"/O=system:masters/CN={ADMIN_USER}", "controller-manager": f"/CN={CONTROLLER_MANAGER_USER}"},
        )
        try:
            etcd_url = self._start_etcd(timeout)
            self._start_apiserver(etcd_url, timeout)
            if before_controllers is not None:
                before_controllers(self)
            self._start_controller_manager(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes.pop(name)
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            [str(self.assets / name), *args], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        self.processes[name] = process
        return process

    def _wait(self, name: str, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after {timeout} s:\n{self.log_tail(name)}")
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _start_etcd(self, timeout: float) -> str:
        client, peer = f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
        data = self.workdir / "etcd"
        shutil.rmtree(data, ignore_errors=True)
        self._spawn(
            "etcd",
            [
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--name=default",
                "--unsafe-no-fsync",  # a test cluster: durability across power loss buys nothing, fsyncs cost time
            ],
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"{client}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait("etcd", healthy, timeout)
        return client

    def _start_apiserver(self, etcd_url: str, timeout: float) -> None:
        pki = self.pki
        assert pki is not None
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki.cert('serving')}",
                f"--tls-private-key-file={pki.key('serving')}",
                f"--client-ca-file={pki.ca}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={','.join(self.admission_plugins)}",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=0",
            ],
        )
        client = self.client()
        try:

            def ready() -> bool:
                try:
                    return client.http.get("/readyz").text == "ok"
                except httpx.HTTPError:
                    return False

            self._wait("kube-apiserver", ready, timeout)
        finally:
            client.close()

    def _start_controller_manager(self, timeout: float) -> None:
        pki = self.pki
        assert pki is not None
        kubeconfig = self.write_kubeconfig(
            self.workdir / "controller-manager.kubeconfig",
            {
                "client-certificate": str(pki.cert("controller-manager")),
                "client-key": str(pki.key("controller-manager")),
            },
        )
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={','.join(self.controllers)}",
            ],
        )
        client = self.client()
        try:
            # The ServiceAccount controller creating `default` in `default` shows the controllers are running.
            self._wait(
                "kube-controller-manager", lambda: _exists(client, ("v1", "serviceaccounts"), "default"), timeout
            )
        finally:
            client.close()

    # ---- access ------------------------------------------------------------------------------------
    def client(self, agent: str = TEST_AGENT) -> KubeTestClient:
        """A client with the admin certificate (system:masters)."""
        pki = self.pki
        assert pki is not None
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(str(pki.cert("admin")), str(pki.key("admin")))
        return KubeTestClient(self.url, agent, verify=context)

    def token_client(self, token: str, agent: str = TEST_AGENT) -> KubeTestClient:
        """A client that authenticates with a bearer token (a ServiceAccount's, say)."""
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        return KubeTestClient(self.url, agent, verify=context, headers={"Authorization": f"Bearer {token}"})

    def write_kubeconfig(self, path: Path, user: dict[str, str], namespace: str = "default") -> Path:
        assert self.pki is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "envtest", "cluster": {"server": self.url, "certificate-authority": str(self.pki.ca)}}
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {"name": "envtest", "context": {"cluster": "envtest", "user": "user", "namespace": namespace}}
            ],
            "current-context": "envtest",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        return path

    def write_admin_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        assert self.pki is not None
        user = {"client-certificate": str(self.pki.cert("admin")), "client-key": str(self.pki.key("admin"))}
        return self.write_kubeconfig(path, user, namespace)

    def service_account_token(self, namespace: str, name: str, seconds: int = 24 * 3600) -> str:
        """A bound token of the ServiceAccount (TokenRequest API), as a pod of that account would hold."""
        client = self.client()
        try:
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            }
            return client.create_subresource(("v1", "serviceaccounts"), namespace, name, "token", body)["status"][
                "token"
            ]
        finally:
            client.close()


def _exists(client: KubeTestClient, res: tuple[str, str], name: str, namespace: str = "default") -> bool:
    try:
        return client.find(res, namespace, name) is not None
    except httpx.HTTPError:
        return False
