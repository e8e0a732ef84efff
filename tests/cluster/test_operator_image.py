"""The operator IMAGE against the real API server, run as the installed (namespaced) Deployment runs it: its entry
point and user, the Deployment's environment, a read-only root filesystem with an emptyDir-like /tmp, the
ServiceAccount's token. It reports its version, answers the kubelet's liveness probe, reconciles a FineTuneJob into
a trainer Job of the released trainer image, and stops cleanly on SIGTERM. (Needs buildah: tests/support/images.py.)"""

from __future__ import annotations

import base64
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import kubetune
import pytest
import yaml

from tests.deploy import rbac, render
from tests.support import images
from tests.support.envtest.audit import service_account_user
from tests.support.kube.server import FTJ, JOBS, ROLEBINDINGS, ROLES, SERVICEACCOUNTS

from .helpers import exists, finetunejob

pytestmark = [pytest.mark.images, pytest.mark.timeout(images.BUILD_TIMEOUT)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _self_contained_kubeconfig(source: str, target: Path) -> None:
    """The operator's kubeconfig with its CA inlined: the container sees no host paths."""
    config = yaml.safe_load(Path(source).read_text())
    for cluster in config["clusters"]:
        ca = Path(cluster["cluster"].pop("certificate-authority"))
        cluster["cluster"]["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o644)


@pytest.fixture(scope="module")
def image() -> images.Image:
    missing = images.missing_tools()
    if missing:
        pytest.skip(images.HOW_TO_GET)
    return images.built("operator")


CLUSTERROLES = ("rbac.authorization.k8s.io/v1", "clusterroles")
CLUSTERROLEBINDINGS = ("rbac.authorization.k8s.io/v1", "clusterrolebindings")
ACCOUNT = "kubetune-operator"


@dataclass
class NamespacedInstall:
    """The namespaced overlay installed for one namespace, with an operator ServiceAccount of its own there."""

    container: dict
    user: str
    cluster_grants: set
    cluster_bindings: list[str]


def _namespaced_install(control_plane, ns: str, kube, folder: Path) -> NamespacedInstall:
    """The namespaced overlay for `ns` alone: kopf's peering CRDs, the overlay's Role and its few cluster-wide reads
    (ClusterRoles) bound to a ServiceAccount in `ns`, whose token becomes `folder`/kubeconfig. (One namespace keeps
    the image's operator away from the other tests' objects; its own account keeps its requests out of the session
    operator's RBAC evidence, test_rbac_audit.py.)"""
    manifests = render.kustomize(render.OVERLAYS / "namespaced")
    control_plane.apply_crds(render.by_kind(manifests, "CustomResourceDefinition"))
    kube.create(SERVICEACCOUNTS, ns, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}})
    subject = [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": ns}]
    watched = render.by_kind(manifests, "Role")[0]["metadata"]["namespace"]
    role = render.one([m for m in manifests if m["metadata"].get("namespace") == watched], "Role")
    binding = render.one([m for m in manifests if m["metadata"].get("namespace") == watched], "RoleBinding")
    role["metadata"]["namespace"] = binding["metadata"]["namespace"] = ns
    binding["subjects"] = subject
    kube.create(ROLES, ns, role)
    kube.create(ROLEBINDINGS, ns, binding)
    for cluster_role in render.by_kind(manifests, "ClusterRole"):
        if kube.find(CLUSTERROLES, None, cluster_role["metadata"]["name"]) is None:
            kube.create(CLUSTERROLES, None, cluster_role)
    bindings = []
    for cluster_binding in render.by_kind(manifests, "ClusterRoleBinding"):
        cluster_binding["metadata"]["name"] += f"-{ns}"
        cluster_binding["subjects"] = subject
        kube.create(CLUSTERROLEBINDINGS, None, cluster_binding)
        bindings.append(cluster_binding["metadata"]["name"])
    token = control_plane.plane.service_account_token(ns, ACCOUNT)
    path = control_plane.plane.write_kubeconfig(folder / "token.kubeconfig", {"token": token}, namespace=ns)
    _self_contained_kubeconfig(str(path), folder / "kubeconfig")
    path.unlink()
    return NamespacedInstall(
        container=render.one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0],
        user=service_account_user(ns, ACCOUNT),
        cluster_grants=set().union(*rbac.roles(manifests, "ClusterRole").values()),
        cluster_bindings=bindings,
    )


def test_the_operator_image_runs_as_its_deployment_says(image, control_plane, ns, kube, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o755)
    install = _namespaced_install(control_plane, ns, kube, secrets)
    container = install.container
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    health = _free_port()
    env = {item["name"]: item["value"] for item in container["env"]}
    env.update(
        {
            # Ports of their own (this machine is shared), this test's namespace, the ServiceAccount's token as a
            # kubeconfig (in a pod: the mounted token); everything else exactly as the Deployment sets it.
            "KUBETUNE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{health}/healthz",
            "KUBETUNE_METRICS_PORT": str(_free_port()),
            "KUBETUNE_WATCH_NAMESPACES": ns,
            "KUBECONFIG": "/etc/kubetune/kubeconfig",
        }
    )
    since = control_plane.audit.offset()
    one = images.Container(images.session_buildah(), image)
    running = one.start(
        entrypoint=container["command"],
        env=env,
        mounts=[images.Mount(secrets, "/etc/kubetune")],
        read_only=True,
        tmpfs_tmp=True,
    )
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert running.process.poll() is None, running.output()[-4000:]
            try:
                if httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no liveness answer within 60 s"
            time.sleep(0.2)
        kube.create(FTJ, ns, finetunejob(ns))
        job = kube.wait_for(JOBS, ns, "sentiment-train", exists, 60, what="created by the operator image")
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == env["KUBETUNE_TRAINER_IMAGE"]
        assert env["KUBETUNE_TRAINER_IMAGE"] == f"ghcr.io/kubetune/kubetune-trainer:{kubetune.__version__}"
    except AssertionError as error:
        running.stop(grace=30)
        raise AssertionError(f"{error}\noperator image output:\n{running.output()[-6000:]}") from error
    finally:
        code = running.stop(grace=30)
        images.TIMINGS.add("operator runs", time.monotonic() - started)
        one.remove()
        for name in install.cluster_bindings:
            kube.delete(CLUSTERROLEBINDINGS, None, name)
    output = running.output()
    assert code == 0, output[-4000:]
    assert f"kubetune operator {kubetune.__version__} starting" in output
    refused = control_plane.audit.refused(install.user, since)
    assert not refused, [f"{e.code} {e.verb} {e.uri}" for e in refused]
    calls = control_plane.audit.events(since, install.user)
    outside = {event.permission for event in calls if event.namespace != ns}
    assert outside <= install.cluster_grants, "outside its namespace, only the overlay's cluster-wide reads"
