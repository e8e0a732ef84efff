"""kubetune installs as docs/install.md tells users to, on a fresh real API server, and README's journey works.

Each test starts its own control plane (nothing pre-installed: no CRDs, no RBAC), installs with the real kubectl
or helm exactly as documented (ONE `kubectl apply -k`), readies the operator's pod with the fake kubelet so
`kubectl rollout status` is real, runs the operator from the installed Deployment's pod template as its
ServiceAccount, then runs README.md's user journey command by command. The audit log must show no request of the
operator refused; what it used is recorded per install mode (install_support.INSTALL_AUDIT).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
from kubetune.operator.kube import load_configuration
from kubetune.operator.runner import ensure_peering
from kubetune.operator.settings import OperatorSettings

from tests.support.envtest.controlplane import HOW_TO_GET, assets_folder
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import DEPLOYMENTS, FTJ, JOBS

from .helpers import exists, finetunejob
from .install_support import (
    OPERATOR_DEPLOYMENT,
    OPERATOR_NAMESPACE,
    RESTRICTED,
    InstallCluster,
    OperatorPod,
    check_mode,
    fresh_cluster,
    installed_permissions,
    readme_journey,
    run_readme_journey,
)

KOPF_PEERINGS = ("kopf.dev/v1", "kopfpeerings")
LEASES = ("coordination.k8s.io/v1", "leases")
LEASE, LEASE_SECONDS = "kubetune-operator", 15
TAKEOVER = 20  # retry period, kopf's start and the Job creation on a loaded box
CLUSTER_KOPF_PEERINGS = ("kopf.dev/v1", "clusterkopfpeerings")
PEERING = "kubetune"


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[InstallCluster]:
    assets = assets_folder()
    if assets is None:
        pytest.skip(HOW_TO_GET)
    with fresh_cluster(assets, tmp_path) as cluster:
        yield cluster


@pytest.fixture
def nodes(fresh: InstallCluster) -> Iterator[FakeKubelet]:
    kubelet = FakeKubelet(fresh.admin).start()
    yield kubelet
    kubelet.stop()


@pytest.fixture
def install_audit(request: pytest.FixtureRequest) -> dict:
    return installed_permissions(request.config)


@pytest.fixture
def operator_pod(fresh: InstallCluster) -> Iterator[OperatorPod]:
    pod = OperatorPod(fresh)
    yield pod
    pod.stop()


def _operator_rolled_out(cluster: InstallCluster, nodes: FakeKubelet) -> None:
    """The fake kubelet runs the operator's pod; then the documented `kubectl rollout status` must succeed."""
    nodes.deployment_ready(OPERATOR_NAMESPACE, OPERATOR_DEPLOYMENT)
    cluster.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}", "--timeout=60s")


def _journey_in(cluster: InstallCluster, nodes: FakeKubelet, namespace: str) -> None:
    """README's journey in `namespace`: the FineTuneJob succeeds and shows in `kubectl get ftj`, the server is
    Ready and its URL is printed."""
    result = run_readme_journey(cluster, nodes, namespace)
    assert result.ftj_row.split()[1] == "Succeeded", result.ftj_row
    url = next(out for command, out in result.outputs.items() if "{.status.url}" in command)
    assert url == f"http://sentiment-ko.{namespace}.svc.cluster.local:8000/v1"


def _peers(peering: dict) -> list[str]:
    """Operator identities that announced themselves in a peering object's status."""
    return list((peering.get("status") or {}).keys())


def test_kustomize_cluster_wide_installs_with_one_apply(fresh, nodes, operator_pod, install_audit):
    fresh.kubectl("apply", "-k", "deploy/kustomize/overlays/cluster-wide")
    _operator_rolled_out(fresh, nodes)
    fresh.kubectl("get", "crd", "finetunejobs.kubetune.dev", "modelserves.kubetune.dev")
    operator_pod.start()
    # The operator created its ClusterKopfPeering (the install ships none) and joined it.
    peering = fresh.admin.get(CLUSTER_KOPF_PEERINGS, None, PEERING)
    assert len(_peers(peering)) == 1, peering
    fresh.create_namespace("ml-team", RESTRICTED)
    _journey_in(fresh, nodes, "ml-team")
    operator_pod.stop()
    check_mode("kustomize:cluster-wide", fresh, operator_pod.user, install_audit)


def test_kustomize_namespaced_installs_with_one_apply(fresh, nodes, operator_pod, install_audit):
    # docs/install.md: the watched namespaces must exist before the install (the Roles live in them).
    fresh.create_namespace("team-a", RESTRICTED)
    fresh.create_namespace("team-b", RESTRICTED)
    fresh.kubectl("apply", "-k", "deploy/kustomize/overlays/namespaced")
    _operator_rolled_out(fresh, nodes)
    operator_pod.start()
    for namespace in ("team-a", "team-b"):
        assert len(_peers(fresh.admin.get(KOPF_PEERINGS, namespace, PEERING))) == 1
    assert fresh.admin.find(CLUSTER_KOPF_PEERINGS, None, PEERING) is None
    _journey_in(fresh, nodes, "team-a")
    operator_pod.stop()
    check_mode("kustomize:namespaced", fresh, operator_pod.user, install_audit)


def test_helm_install_then_upgrade(fresh, nodes, operator_pod, install_audit):
    chart = "deploy/helm/kubetune"
    fresh.helm("install", "kubetune", chart, "--namespace", OPERATOR_NAMESPACE, "--create-namespace")
    fresh.kubectl("label", "namespace", OPERATOR_NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    _operator_rolled_out(fresh, nodes)
    operator_pod.start()
    # An upgrade that changes the operator's pod: Recreate stops the old pod before the new one runs.
    fresh.helm("upgrade", "kubetune", chart, "--namespace", OPERATOR_NAMESPACE, "--set", "operator.workers=4")
    operator_pod.stop()
    _operator_rolled_out(fresh, nodes)
    deployment = fresh.admin.get(DEPLOYMENTS, OPERATOR_NAMESPACE, OPERATOR_DEPLOYMENT)
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    operator_pod.start()  # from the upgraded template; its peering object exists already
    assert operator_pod.env["KUBETUNE_WORKERS"] == "4"
    fresh.create_namespace("ml-team", RESTRICTED)
    _journey_in(fresh, nodes, "ml-team")
    operator_pod.stop()
    check_mode("helm:cluster-wide", fresh, operator_pod.user, install_audit)


def _job_creates(cluster: InstallCluster, user: str, namespace: str, since: int) -> list[int]:
    """Response codes of the operator identity's Job creations in `namespace` (a second active replica would
    show as a 409)."""
    return [
        e.code
        for e in cluster.audit.events(since, user)
        if e.verb == "create" and e.resource == "jobs" and e.namespace == namespace
    ]


HA_INSTALLS = {
    "kustomize": [("kubectl", "apply", "-k", "deploy/kustomize/overlays/cluster-wide-ha")],
    "helm": [
        (
            "helm",
            "install",
            "kubetune",
            "deploy/helm/kubetune",
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--set",
            "operator.replicas=2",
            "--set",
            "operator.leaderElection.enabled=true",
        ),
        ("kubectl", "label", "namespace", OPERATOR_NAMESPACE, "pod-security.kubernetes.io/enforce=restricted"),
    ],
}


@pytest.mark.parametrize("source", sorted(HA_INSTALLS))
def test_ha_install_one_replica_leads_and_the_other_takes_over(source, fresh, nodes, install_audit):
    """The HA install as documented (kustomize overlay cluster-wide-ha, or Helm with operator.replicas=2): two
    operator pods from its pod template, as its ServiceAccount, each with its own POD_NAME (downward API). One holds
    the Lease and acts; the other only answers its liveness probe. After a SIGKILL of the leader (nothing released)
    the other takes over once the Lease expires."""
    for program, *args in HA_INSTALLS[source]:
        fresh.kubectl(*args) if program == "kubectl" else fresh.helm(*args)
    _operator_rolled_out(fresh, nodes)
    deployment = fresh.admin.get(DEPLOYMENTS, OPERATOR_NAMESPACE, OPERATOR_DEPLOYMENT)
    assert deployment["spec"]["replicas"] == 2
    first = OperatorPod(fresh, pod_name="kubetune-operator-a").start()
    second = OperatorPod(fresh, pod_name="kubetune-operator-b")
    try:
        second.start(watching=False)
        assert first.env["POD_NAME"] == "kubetune-operator-a" and second.env["POD_NAME"] == "kubetune-operator-b"
        lease = fresh.admin.get(LEASES, OPERATOR_NAMESPACE, LEASE)
        assert lease["spec"]["holderIdentity"] == "kubetune-operator-a"
        fresh.create_namespace("ml-team", RESTRICTED)
        since = fresh.audit.offset()
        fresh.admin.create(FTJ, "ml-team", finetunejob("ml-team", "before"))
        fresh.admin.wait_for(JOBS, "ml-team", "before-train", exists, TAKEOVER, "to be created by the leader")
        time.sleep(2)  # a second active replica would try too (and get a 409) within this time
        assert _job_creates(fresh, first.user, "ml-team", since) == [201], "exactly one replica acts"

        first.kill()
        killed = time.monotonic()
        fresh.admin.create(FTJ, "ml-team", finetunejob("ml-team", "after"))
        fresh.admin.wait_for(JOBS, "ml-team", "after-train", exists, LEASE_SECONDS + TAKEOVER, "the takeover")
        took = time.monotonic() - killed
        lease = fresh.admin.get(LEASES, OPERATOR_NAMESPACE, LEASE)
        assert lease["spec"]["holderIdentity"] == "kubetune-operator-b"
        assert took >= LEASE_SECONDS - 3, f"took over after {took:.1f} s: before the Lease expired"
        print(f"HA install ({source}): the follower created the next Job {took:.1f} s after the leader was killed")
    finally:
        first.stop()
        second.stop()
    check_mode(f"{source}:cluster-wide-ha", fresh, second.user, install_audit)


def test_the_readme_journey_is_what_the_tests_run():
    """The journey's commands as parsed from README.md: a change there that the install tests cannot follow
    (a non-kubectl step, no apply, no waits) fails here rather than silently testing less."""
    commands = [" ".join(argv[1:3]) for argv in readme_journey()]
    assert commands[:2] == ["create configmap", "apply -f"]
    assert "wait ftj/sentiment-ko" in commands and "wait msv/sentiment-ko" in commands


def test_an_operator_that_cannot_create_its_peering_object_starts_and_says_why(control_plane, ns, kube, caplog):
    """A hand-made RBAC without `create` (403), or kopf's peering CRDs missing (404; the session's control plane
    has only the kubetune CRDs): the operator logs why and starts, paused by kopf until the object exists, rather
    than crash-looping. Other errors are raised."""
    kube.create(("v1", "serviceaccounts"), ns, {"metadata": {"name": "no-rights"}})
    token = control_plane.plane.service_account_token(ns, "no-rights")
    cases = {
        "403": (
            control_plane.plane.write_kubeconfig(control_plane.workdir / f"{ns}.kubeconfig", {"token": token}),
            (ns,),
        ),
        "404": (control_plane.plane.write_admin_kubeconfig(control_plane.workdir / "admin.kubeconfig"), ()),
    }
    for code, (kubeconfig, namespaces) in cases.items():
        caplog.clear()
        api = kubernetes.client.ApiClient(load_configuration(str(kubeconfig)))
        try:
            with caplog.at_level(logging.WARNING, logger="kubetune.operator.runner"):
                ensure_peering(OperatorSettings(peering=PEERING, watch_namespaces=namespaces), api)
        finally:
            api.close()
        kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
        assert f"cannot create the {kind} 'kubetune'" in caplog.text and f"({code} " in caplog.text, caplog.text
