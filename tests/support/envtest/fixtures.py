"""pytest fixtures for the real-control-plane tier; reuse them with `from tests.support.envtest.fixtures import *`.

- `control_plane` (session): etcd + kube-apiserver + kube-controller-manager, the generated CRDs applied, and the
  operator's identity installed from `deploy/` (its ServiceAccount and the rendered cluster-wide RBAC). Without
  KUBEBUILDER_ASSETS every test that uses it is skipped with one line saying how to get the binaries.
- `ns`: a fresh namespace per test, labelled `pod-security.kubernetes.io/enforce=restricted`; deleted afterwards.
- `kube`: an admin client; `kubelet`: the fake kubelet (session); `operator`: the real operator, authenticated as
  its ServiceAccount (a token, not the admin certificate), watching the test's namespace. A test fails when the
  API server refused any of the operator's requests (401/403 in the audit log).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kubetune.operator.runner import OperatorThread
from kubetune.operator.settings import OperatorSettings

from ..kube.resources import load_crds
from ..kube.server import KubeError, KubeTestClient
from .audit import AuditLog, service_account_user
from .controlplane import ControlPlane, require_assets_or_skip
from .kubelet import FakeKubelet

REPO_ROOT = Path(__file__).resolve().parents[3]
OPERATOR_NAMESPACE = "kubetune"
OPERATOR_ACCOUNT = "kubetune-operator"
OPERATOR_USER = service_account_user(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
CRDS = ("apiextensions.k8s.io/v1", "customresourcedefinitions")
NAMESPACES = ("v1", "namespaces")
OPERATOR_WATCHES = {"finetunejobs", "modelserves", "jobs", "deployments", "services"}
_counter = itertools.count(1)


class RealCluster:
    """The session's control plane plus what every test needs from it."""

    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.plane = plane
        self.workdir = workdir
        self.audit = AuditLog(plane.audit_log)
        self.admin = plane.client()
        self.operator_kubeconfig: Path | None = None

    def client(self) -> KubeTestClient:
        return self.plane.client()

    def apply_crds(self, crds: list[dict[str, Any]], timeout: float = 30) -> None:
        """Create (or replace) CRDs as an admin would, and wait until the server serves them."""
        for crd in crds:
            name = crd["metadata"]["name"]
            existing = self.admin.find(CRDS, None, name)
            if existing is None:
                self.admin.create(CRDS, None, crd)
            else:
                body = {
                    **crd,
                    "metadata": {**crd["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]},
                }
                self.admin._check(
                    self.admin.http.put(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", json=body)
                )
            self.admin.wait_for(CRDS, None, name, _established, timeout, what="to be Established")

    def install_operator_identity(self) -> Path:
        """The operator's ServiceAccount and its cluster-wide RBAC exactly as deploy/ renders them; a kubeconfig
        with the account's token."""
        from tests.deploy import render  # kubectl kustomize, from the PyPI wheel

        manifests = render.kustomize(render.OVERLAYS / "cluster-wide")
        wanted = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
        for manifest in manifests:
            if manifest["kind"] in wanted:
                apply(self.admin, manifest)
        token = self.plane.service_account_token(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
        self.operator_kubeconfig = self.plane.write_kubeconfig(self.workdir / "operator.kubeconfig", {"token": token})
        return self.operator_kubeconfig

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
        self.admin.create(NAMESPACES, None, body)
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.admin.delete(NAMESPACES, None, name)
        except KubeError as error:
            if error.code != 404:
                raise


def _established(crd: dict[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


_PLURALS = {
    "Namespace": ("v1", "namespaces"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
}


def apply(client: KubeTestClient, manifest: dict[str, Any]) -> None:
    """Create one object of a kind in `_PLURALS`; an existing one is left as it is."""
    res = _PLURALS[manifest["kind"]]
    try:
        client.create(res, manifest["metadata"].get("namespace"), manifest)
    except KubeError as error:
        if error.code != 409:
            raise


@contextmanager
def installed_cluster(plane: ControlPlane, workdir: Path) -> Iterator[RealCluster]:
    """Start `plane` with the CRDs and the operator's identity installed before the controllers (so the garbage
    collector follows the CRDs at once); stop it afterwards. The session fixture and the scale benchmark."""
    clusters: list[RealCluster] = []

    def install(started: ControlPlane) -> None:
        cluster = RealCluster(started, workdir)
        clusters.append(cluster)
        cluster.apply_crds(load_crds())
        cluster.install_operator_identity()

    plane.start(before_controllers=install)
    try:
        yield clusters[0]
    finally:
        clusters[0].admin.close()
        plane.stop()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    assets = require_assets_or_skip()
    workdir = tmp_path_factory.mktemp("envtest")
    with installed_cluster(ControlPlane(assets, workdir / "control-plane"), workdir) as cluster:
        yield cluster


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")


@pytest.fixture
def ns(control_plane: RealCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh restricted namespace for this test (deleted afterwards; the namespace controller cleans up)."""
    name = f"t{next(_counter)}-{_slug(request.node.name)}".rstrip("-")[:63]
    control_plane.create_namespace(name, RESTRICTED)
    yield name
    control_plane.delete_namespace(name)


@pytest.fixture
def kube(control_plane: RealCluster) -> Iterator[KubeTestClient]:
    client = control_plane.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def kubelet(control_plane: RealCluster) -> Iterator[FakeKubelet]:
    client = control_plane.client()
    fake = FakeKubelet(client).start()
    yield fake
    fake.stop()
    client.close()


def quick_exit(settings: kopf.OperatorSettings) -> None:
    """Tests stop the operator often: shorter worker idling makes a stop take well under a second."""
    settings.queueing.idle_timeout = 0.3
    settings.queueing.exit_timeout = 0.5


class RealOperatorControl:
    """Start, stop and restart the real operator (a kopf thread) against the control plane, as its ServiceAccount."""

    def __init__(self, cluster: RealCluster, settings: OperatorSettings) -> None:
        self.cluster, self.settings = cluster, settings
        self.current: OperatorThread | None = None
        self.since = cluster.audit.offset()

    def start(self, timeout: float = 30) -> OperatorThread:
        """Start and wait until the API server saw the operator's watches (so no test races its startup)."""
        offset = self.cluster.audit.offset()
        self.current = OperatorThread(self.settings, quick_exit).start()
        deadline = time.monotonic() + timeout
        while True:
            events = self.cluster.audit.events(offset, OPERATOR_USER)
            watched = {event.resource for event in events if event.verb == "watch" and event.code < 400}
            if watched >= OPERATOR_WATCHES:
                return self.current
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the operator watches only {sorted(watched)} after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None

    def restart(self) -> OperatorThread:
        self.stop()
        return self.start()

    def refused(self) -> list[str]:
        """The operator's requests the API server refused since this control was made."""
        return [
            f"{e.code} {e.verb} {e.uri}: {e.message}" for e in self.cluster.audit.refused(OPERATOR_USER, self.since)
        ]


def operator_settings_for(cluster: RealCluster, namespaces: tuple[str, ...], **overrides: Any) -> OperatorSettings:
    assert cluster.operator_kubeconfig is not None
    values: dict[str, Any] = {
        "kubeconfig": str(cluster.operator_kubeconfig),
        "metrics_port": 0,
        "liveness_endpoint": "",
        "resync": False,
        "trainer_image": "kubetune/trainer:test",
        "server_image": "kubetune/server:test",
        "watch_namespaces": namespaces,
    }
    values.update(overrides)
    return OperatorSettings(**values)


@pytest.fixture
def operator_settings(control_plane: RealCluster, ns: str) -> OperatorSettings:
    return operator_settings_for(control_plane, (ns,))


@pytest.fixture
def operator(control_plane: RealCluster, operator_settings: OperatorSettings) -> Iterator[RealOperatorControl]:
    control = RealOperatorControl(control_plane, operator_settings)
    control.start()
    yield control
    control.stop()
    refused = control.refused()
    if refused:
        pytest.fail("the API server refused the operator's requests:\n" + "\n".join(refused))


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects)
