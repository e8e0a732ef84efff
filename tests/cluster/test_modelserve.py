"""ModelServe scenarios on the real control plane: waiting for adapters, deploying, failing clearly, following
changes, repairing drift, being deleted. The real Deployment and ReplicaSet controllers roll out the server, the
real garbage collector deletes children; the fake kubelet only runs and readies pods."""

from __future__ import annotations

import json
from typing import Any

from tests.support.envtest.fixtures import RealCluster, RealOperatorControl
from tests.support.envtest.kubelet import REPLICASETS, FakeKubelet
from tests.support.kube.server import CONFIGMAPS, DEPLOYMENTS, FTJ, JOBS, MSV, PODS, SERVICES, KubeTestClient

from .helpers import condition, exists, finetunejob, gone, modelserve, operator_requests, wait_phase, wait_until

TIMEOUT = 30  # generous for a loaded 2-core box; every wait returns as soon as its condition holds
# The garbage collector watches a custom resource only once its discovery found the CRD: the harness applies the
# CRDs after the controller manager started, so for the first ~45 s of a session the collector notices a deleted
# ModelServe only at its 30-second re-discovery (measured: children gone 40 s after the delete; at once later).
GC_TIMEOUT = 30


def train(kube: KubeTestClient, kubelet: FakeKubelet, ns: str, name: str = "sentiment", **spec: Any) -> dict:
    """A FineTuneJob whose trainer pod the real Job controller created and that succeeded."""
    kube.create(FTJ, ns, finetunejob(ns, name, **spec))
    kube.wait_for(JOBS, ns, f"{name}-train", exists, TIMEOUT)
    kubelet.start_job(ns, f"{name}-train")
    kubelet.finish_job(ns, f"{name}-train", 0, "{}")
    return wait_phase(kube, ns, name, "Succeeded")


def serve_config(kube: KubeTestClient, ns: str, name: str = "chat") -> dict:
    return json.loads(kube.get(CONFIGMAPS, ns, f"{name}-config")["data"]["serve.json"])


def template(kube: KubeTestClient, ns: str, name: str = "chat") -> dict:
    return kube.get(DEPLOYMENTS, ns, name)["spec"]["template"]


def child_writes(cluster: RealCluster, since: int) -> list[str]:
    """The operator's writes to ModelServe children (Deployments, Services, ConfigMaps) since audit offset `since`."""
    return [
        f"{e.verb} {e.resource}/{e.name}"
        for verb in ("create", "patch", "update", "delete")
        for resource in ("deployments", "services", "configmaps")
        for e in operator_requests(cluster, since, verb, resource)
    ]


def test_waits_for_its_finetunejob_then_deploys(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    kube.create(FTJ, ns, finetunejob(ns))
    kube.create(MSV, ns, modelserve(ns, apiKeySecretRef={"name": "api-key", "key": "key"}))
    msv = wait_phase(kube, ns, "chat", "WaitingForAdapters", res=MSV)
    ready = condition(msv, "AdaptersReady")
    assert ready is not None and ready["status"] == "False" and "FineTuneJob 'sentiment'" in ready["message"]
    assert kube.find(DEPLOYMENTS, ns, "chat") is None

    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    kubelet.start_job(ns, "sentiment-train")
    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    msv = wait_phase(kube, ns, "chat", "Deploying", res=MSV)
    run = f"runs/{kube.get(FTJ, ns, 'sentiment')['metadata']['uid']}"  # each run writes under its own folder
    assert msv["status"]["adapters"] == [
        {
            "name": "sentiment",
            "pvc": {"claimName": "sentiment-output", "path": f"{run}/adapter"},
            "fineTuneJob": "sentiment",
            "state": "Pending",
            "loadedReplicas": 0,
            "message": "no server replica is ready yet",
        }
    ]
    config = serve_config(kube, ns)
    assert config["baseModel"]["name"] == "Qwen/Qwen2.5-0.5B-Instruct"  # from the job: the spec named none
    assert config["adapters"][0]["pvc"] == {"claimName": "sentiment-output", "path": f"{run}/adapter"}

    pod = template(kube, ns)["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "kubetune_server"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBETUNE_SERVE_CONFIG"]["value"] == "/etc/kubetune/serve.json"
    assert env["KUBETUNE_PORT"]["value"] == "8000"
    assert env["KUBETUNE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "api-key", "key": "key"}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert env["OMP_NUM_THREADS"]["value"] == "2"  # the pod's 2-CPU limit, not the node's cores
    assert env["KUBETUNE_DRAIN_SECONDS"]["value"] == "30"
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod["terminationGracePeriodSeconds"] == 50  # preStop 5 + drain 30 + 15 to exit: beyond the default 30
    assert "vllm" not in container["image"]
    assert config["engine"] == "transformers"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/kubetune/pvc/sentiment-output"]["readOnly"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    service = kube.get(SERVICES, ns, "chat")
    assert service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"] == kube.get(DEPLOYMENTS, ns, "chat")["spec"]["selector"]["matchLabels"]

    since = control_plane.audit.offset()
    kubelet.deployment_ready(ns, "chat")  # PodSecurity `restricted` admitted the server pod the ReplicaSet made
    msv = wait_phase(kube, ns, "chat", "Ready", res=MSV)
    assert msv["status"]["url"] == f"http://chat.{ns}.svc.cluster.local:8000/v1"
    assert msv["status"]["readyReplicas"] == 1
    available = condition(msv, "Available")
    assert available is not None and available["status"] == "True"
    assert msv["status"]["observedGeneration"] == 1
    # The server's defaults (probe thresholds, defaultMode, clusterIP, ...) are not drift: nothing was re-patched.
    assert child_writes(control_plane, since) == []


def test_quantities_the_server_normalises_are_not_drift(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    """The API server stores `0.5` CPU as `500m` and `2048Mi` as `2Gi`: the same quantities, so nothing to repair."""
    resources = {"gpus": 1, "cpu": "0.5", "memory": "2048Mi"}
    kube.create(MSV, ns, modelserve(ns, "plain", jobs=(), baseModel={"name": "org/base"}, resources=resources))
    deployment = kube.wait_for(DEPLOYMENTS, ns, "plain", exists, TIMEOUT)
    assert deployment is not None
    stored = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert stored["limits"] == {"cpu": "500m", "memory": "2Gi", "nvidia.com/gpu": "1"}
    # plus the scratch volume's size limit for the Hub download (no model cache configured)
    assert stored["requests"] == {"cpu": "500m", "memory": "2Gi", "ephemeral-storage": "50Gi"}
    kube.wait_for(SERVICES, ns, "plain", exists, TIMEOUT)  # created last
    since = control_plane.audit.offset()
    kubelet.deployment_ready(ns, "plain")  # each Deployment status change is a reconcile
    wait_phase(kube, ns, "plain", "Ready", res=MSV)
    assert child_writes(control_plane, since) == []

    # A different quantity is drift all the same.
    limits = "/spec/template/spec/containers/0/resources/limits/cpu"
    kube.patch(DEPLOYMENTS, ns, "plain", [{"op": "replace", "path": limits, "value": "1"}])
    kube.wait_for(DEPLOYMENTS, ns, "plain", lambda d: _cpu_limit(d) == "500m", TIMEOUT, what="cpu limit restored")


def _cpu_limit(deployment: dict[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    return deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]


def test_failed_or_missing_finetunejob_fails_the_modelserve(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    kube.create(FTJ, ns, finetunejob(ns, "broken", backoffLimit=0))
    kube.wait_for(JOBS, ns, "broken-train", exists, TIMEOUT)
    kubelet.start_job(ns, "broken-train")
    kubelet.finish_job(ns, "broken-train", 1, "boom")
    wait_phase(kube, ns, "broken", "Failed")

    kube.create(MSV, ns, modelserve(ns, "on-failed", jobs=("broken",)))
    msv = wait_phase(kube, ns, "on-failed", "Failed", res=MSV)
    assert (condition(msv, "AdaptersReady") or {}).get("reason") == "FineTuneJobFailed"
    assert "FineTuneJob 'broken' failed" in msv["status"]["message"]

    kube.create(MSV, ns, modelserve(ns, "on-missing", jobs=("nope",)))
    msv = wait_phase(kube, ns, "on-missing", "Failed", res=MSV)
    assert (condition(msv, "AdaptersReady") or {}).get("reason") == "FineTuneJobNotFound"
    assert "'nope' does not exist" in msv["status"]["message"]
    assert kube.find(DEPLOYMENTS, ns, "on-missing") is None

    train(kube, kubelet, ns, "nope")  # created later (GitOps order): the ModelServe recovers
    wait_phase(kube, ns, "on-missing", "Deploying", res=MSV)


def _recreated(first: dict[str, Any]):
    return lambda obj: obj is not None and obj["metadata"]["uid"] != first["metadata"]["uid"]


def test_deleted_or_edited_children_are_repaired(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    train(kube, kubelet, ns)
    kube.create(MSV, ns, modelserve(ns))
    first = kube.wait_for(DEPLOYMENTS, ns, "chat", exists, TIMEOUT)
    service = kube.wait_for(SERVICES, ns, "chat", exists, TIMEOUT)
    assert first is not None and service is not None

    kube.delete(DEPLOYMENTS, ns, "chat")
    kube.wait_for(DEPLOYMENTS, ns, "chat", _recreated(first), TIMEOUT, what="to be recreated")
    kube.patch(DEPLOYMENTS, ns, "chat", {"spec": {"replicas": 5}})
    kube.wait_for(DEPLOYMENTS, ns, "chat", lambda d: d["spec"]["replicas"] == 1, TIMEOUT, "replicas restored")
    kube.delete(SERVICES, ns, "chat")
    kube.wait_for(SERVICES, ns, "chat", _recreated(service), TIMEOUT, what="to be recreated")
    kube.patch(SERVICES, ns, "chat", {"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": "http"}]}})
    kube.wait_for(SERVICES, ns, "chat", lambda svc: svc["spec"]["ports"][0]["port"] == 8000, TIMEOUT, "port restored")

    # The ConfigMap is not watched: the next reconcile repairs it (the periodic resync, off in tests, or the
    # resume pass of a restarted operator, used here).
    wanted = kube.get(CONFIGMAPS, ns, "chat-config")
    kube.patch(CONFIGMAPS, ns, "chat-config", {"data": {"serve.json": "{}"}})
    operator.restart()
    kube.wait_for(CONFIGMAPS, ns, "chat-config", lambda cm: cm["data"] == wanted["data"], TIMEOUT, "restored")
    kube.delete(CONFIGMAPS, ns, "chat-config")
    operator.restart()
    kube.wait_for(CONFIGMAPS, ns, "chat-config", _recreated(wanted), TIMEOUT, what="to be recreated")
    assert kube.get(CONFIGMAPS, ns, "chat-config")["data"] == wanted["data"]

    kubelet.deployment_ready(ns, "chat")
    wait_phase(kube, ns, "chat", "Ready", res=MSV)


def test_spec_changes_patch_the_deployment_and_hot_reload_adapters(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    # ReadWriteMany: two replicas later mount it on any node (a ReadWriteOnce claim would be refused for them)
    train(kube, kubelet, ns, output={"accessMode": "ReadWriteMany"})
    train(kube, kubelet, ns, "other", output={"pvc": {"claimName": "sentiment-output", "path": "other"}})
    kube.create(MSV, ns, modelserve(ns))
    kube.wait_for(DEPLOYMENTS, ns, "chat", exists, TIMEOUT)
    kubelet.deployment_ready(ns, "chat")
    wait_phase(kube, ns, "chat", "Ready", res=MSV)
    deployment = kube.get(DEPLOYMENTS, ns, "chat")
    before = deployment["spec"]["template"]

    # An adapter on an already-mounted claim: only serve.json changes (the server hot-reloads it), no rollout.
    adapters = [
        {"name": "sentiment", "fineTuneJobRef": {"name": "sentiment"}},
        {"name": "other", "fineTuneJobRef": {"name": "other"}},
    ]
    kube.patch(MSV, ns, "chat", {"spec": {"adapters": adapters}})
    kube.wait_for(CONFIGMAPS, ns, "chat-config", lambda cm: "other/runs/" in cm["data"]["serve.json"], TIMEOUT)
    kube.wait_for(MSV, ns, "chat", lambda m: m["status"].get("observedGeneration") == 2, TIMEOUT)
    after = kube.get(DEPLOYMENTS, ns, "chat")
    assert after["spec"]["template"] == before
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"]

    # A new claim needs a new volume: the pod template changes (a rolling update).
    adapters.append({"name": "external", "pvc": {"claimName": "team-adapters", "path": "v2"}})
    kube.patch(MSV, ns, "chat", {"spec": {"adapters": adapters, "replicas": 2}})
    deployment = kube.wait_for(DEPLOYMENTS, ns, "chat", lambda d: d["spec"]["replicas"] == 2, TIMEOUT)
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"sentiment-output", "team-adapters"}
    msv = kube.wait_for(MSV, ns, "chat", lambda m: m["status"].get("observedGeneration") == 3, TIMEOUT)
    assert msv["status"]["adapterNames"] == "sentiment,other,external"

    # A change the server reads only at start (here quantization) restarts the pods via the hash annotation.
    kube.patch(MSV, ns, "chat", {"spec": {"quantization": {"bits": 4}}})
    kube.wait_for(
        DEPLOYMENTS,
        ns,
        "chat",
        lambda d: d["spec"]["template"]["metadata"]["annotations"] != before["metadata"]["annotations"],
        TIMEOUT,
        what="to roll out",
    )
    # The real Deployment controller rolls out a new ReplicaSet; once its two pods are ready and the old ReplicaSet
    # is scaled down (the rollout is complete), so is the ModelServe.
    kubelet.deployment_ready(ns, "chat")
    msv = wait_phase(kube, ns, "chat", "Ready", res=MSV)
    assert msv["status"]["readyReplicas"] == 2
    assert (condition(msv, "Progressing") or {}).get("status") == "False"
    revisions = {
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        for rs in kube.list(REPLICASETS, ns)
        if rs["metadata"]["ownerReferences"][0]["name"] == "chat"
    }
    assert revisions == {"1", "2", "3"}


def test_progress_deadline_exceeded_fails(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    """The real Deployment controller decides ProgressDeadlineExceeded. Neither the ModelServe API nor the operator
    sets progressDeadlineSeconds (the default is 600 s), and the operator does not own that field: an
    administrator's shorter deadline is kept, and the server pod stays Pending (no kubelet readies it)."""
    kube.create(MSV, ns, modelserve(ns, "plain", jobs=(), baseModel={"name": "org/base"}))
    kube.wait_for(DEPLOYMENTS, ns, "plain", exists, TIMEOUT)
    kube.patch(DEPLOYMENTS, ns, "plain", {"spec": {"progressDeadlineSeconds": 1}})
    msv = wait_phase(kube, ns, "plain", "Failed", res=MSV)
    assert (condition(msv, "Ready") or {}).get("reason") == "ProgressDeadlineExceeded"
    assert "progress" in msv["status"]["message"]
    assert kube.get(DEPLOYMENTS, ns, "plain")["spec"]["progressDeadlineSeconds"] == 1
    assert all(pod["status"]["phase"] == "Pending" for pod in kube.list(PODS, ns))


def test_deleting_the_modelserve_deletes_its_children(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    kube.create(MSV, ns, modelserve(ns, "plain", jobs=(), baseModel={"name": "org/base"}))
    kube.wait_for(SERVICES, ns, "plain", exists, TIMEOUT)
    kubelet.deployment_ready(ns, "plain")
    wait_phase(kube, ns, "plain", "Ready", res=MSV)
    kube.delete(MSV, ns, "plain")
    for res, name in [(DEPLOYMENTS, "plain"), (SERVICES, "plain"), (CONFIGMAPS, "plain-config")]:
        kube.wait_for(res, ns, name, gone, GC_TIMEOUT, what="to be garbage-collected")
    # The collector goes on down the chain: the Deployment's ReplicaSet, then its pod.
    for res in (REPLICASETS, PODS):
        wait_until(lambda res=res: not kube.list(res, ns), f"for every {res[1]} in {ns} to be garbage-collected")


def test_a_deleted_modelserve_is_forgotten(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    """kopf calls no delete handler for an object without its finalizer (and the operator adds none): the DELETED
    event is what tells the operator to forget a ModelServe, so it leaves the kubetune_modelserves gauge."""
    created = kube.create(MSV, ns, modelserve(ns, "plain", jobs=(), baseModel={"name": "org/base"}))
    kube.wait_for(DEPLOYMENTS, ns, "plain", exists, TIMEOUT)
    kubelet.deployment_ready(ns, "plain")
    wait_phase(kube, ns, "plain", "Ready", res=MSV)
    ctx = operator.current.ctx

    def ready_count() -> float | None:
        return ctx.metrics.registry.get_sample_value("kubetune_modelserves", {"phase": "Ready"})

    wait_until(lambda: ready_count() == 1, "for the Ready ModelServe to be counted")
    kube.delete(MSV, ns, "plain")
    wait_until(lambda: ready_count() == 0, "for the deleted ModelServe to leave the kubetune_modelserves gauge")
    assert ctx.is_gone(created["metadata"]["uid"])
