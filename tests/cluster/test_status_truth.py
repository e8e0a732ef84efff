"""Status tells the truth on the real control plane: a trainer pod that cannot run (Unschedulable, an image that
cannot be pulled, a pod the API server refuses) keeps the FineTuneJob Pending with the reason and message the
scheduler, kubelet or Job controller gave; a failed FineTuneJob says `Succeeded=False`; a ModelServe is Ready only
once its rollout is complete, and stops being Available when its FineTuneJob goes away.

The fake kubelet has no scheduler and pulls no image: the tests write the pod status a scheduler or kubelet would."""

from __future__ import annotations

from typing import Any

from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import DEPLOYMENTS, FTJ, JOBS, MSV, PODS, KubeTestClient

from .helpers import condition, exists, finetunejob, modelserve, wait_event, wait_phase, wait_until

TIMEOUT = 30  # generous for a loaded 2-core box; every wait returns as soon as its condition holds
JOB = "sentiment-train"
QUOTAS = ("v1", "resourcequotas")
EVENTS = ("v1", "events")
GPU_MESSAGE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."


def _trainer_pod(kube: KubeTestClient, ns: str) -> dict[str, Any]:
    """The pod the real Job controller created for the trainer Job."""
    return wait_until(lambda: next(iter(kube.list(PODS, ns, f"batch.kubernetes.io/job-name={JOB}")), None), "a pod")


def _unschedulable(kube: KubeTestClient, ns: str, pod: str, message: str) -> None:
    """What the scheduler writes when no node fits (PodScheduled=False, reason Unschedulable)."""
    scheduled = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    kube.patch(PODS, ns, pod, {"status": {"conditions": [scheduled]}}, "status")


def _waiting(kube: KubeTestClient, ns: str, pod: str, reason: str, message: str) -> None:
    """What the kubelet writes while a container cannot start (e.g. ImagePullBackOff)."""
    container = {
        "name": "trainer",
        "image": "ghcr.io/kubetune/trainer:missing",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}},
    }
    kube.patch(PODS, ns, pod, {"status": {"containerStatuses": [container]}}, "status")


def _message_has(text: str):
    return lambda obj: obj is not None and text in ((obj.get("status") or {}).get("message") or "")


def test_unschedulable_pod_keeps_the_finetunejob_pending_with_the_schedulers_message(
    operator, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    kube.create(FTJ, ns, finetunejob(ns))
    pod = _trainer_pod(kube, ns)["metadata"]["name"]
    _unschedulable(kube, ns, pod, GPU_MESSAGE)
    ftj = kube.wait_for(FTJ, ns, "sentiment", _message_has(GPU_MESSAGE), TIMEOUT, "the scheduler's message")
    assert ftj["status"]["phase"] == "Pending"
    running = condition(ftj, "Running")
    assert running is not None and (running["status"], running["reason"]) == ("False", "Unschedulable")
    assert GPU_MESSAGE in running["message"]
    assert (kube.get(JOBS, ns, JOB).get("status") or {}).get("active") == 1  # the Job counts it as active
    wait_event(kube, ns, "sentiment", "Unschedulable")

    kubelet.start_job(ns, JOB)  # a GPU freed up: the pod is bound and runs
    ftj = wait_phase(kube, ns, "sentiment", "Running")
    assert (condition(ftj, "Running") or {}).get("status") == "True"


LONG = "sentiment-" + "x" * 60  # a valid name longer than a label value (63): the label carries a cut form


def test_a_finetunejob_with_a_long_name_shows_why_its_pod_does_not_run(operator, kube: KubeTestClient, ns: str):
    """Pod and Job events name their FineTuneJob by its label, whose value is cut to 63 characters for a long name:
    the operator must still find the FineTuneJob (through the trainer Job's owner reference)."""
    kube.create(FTJ, ns, finetunejob(ns, LONG))
    pods = wait_until(lambda: kube.list(PODS, ns), "a trainer pod")
    _unschedulable(kube, ns, pods[0]["metadata"]["name"], GPU_MESSAGE)
    ftj = kube.wait_for(FTJ, ns, LONG, _message_has(GPU_MESSAGE), TIMEOUT, "the scheduler's message")
    assert (condition(ftj, "Running") or {}).get("reason") == "Unschedulable"


def test_a_pod_refused_for_a_finetunejob_with_a_long_name_shows_the_failed_create(
    operator, kube: KubeTestClient, ns: str
):
    quota = {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    kube.create(QUOTAS, ns, {"apiVersion": "v1", "kind": "ResourceQuota", **quota})
    kube.patch(QUOTAS, ns, "no-pods", {"status": {"hard": {"pods": "0"}, "used": {"pods": "0"}}}, "status")
    kube.create(FTJ, ns, finetunejob(ns, LONG))
    ftj = kube.wait_for(FTJ, ns, LONG, _message_has("exceeded quota: no-pods"), TIMEOUT, "the FailedCreate message")
    assert (condition(ftj, "Running") or {}).get("reason") == "FailedCreate"


def test_image_pull_backoff_is_shown_until_the_pod_runs(operator, kube: KubeTestClient, kubelet: FakeKubelet, ns: str):
    kube.create(FTJ, ns, finetunejob(ns))
    pod = _trainer_pod(kube, ns)["metadata"]["name"]
    pulling = 'Back-off pulling image "ghcr.io/kubetune/trainer:missing"'
    _waiting(kube, ns, pod, "ImagePullBackOff", pulling)
    ftj = kube.wait_for(FTJ, ns, "sentiment", _message_has(pulling), TIMEOUT, "the kubelet's message")
    assert ftj["status"]["phase"] == "Pending"
    assert (condition(ftj, "Running") or {}).get("reason") == "ImagePullBackOff"


def test_a_pod_the_api_server_refuses_shows_the_jobs_failed_create(operator, kube: KubeTestClient, ns: str):
    """A quota on pods refuses the trainer pod, not its Job: the Job controller reports FailedCreate as an Event."""
    quota = {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    kube.create(QUOTAS, ns, {"apiVersion": "v1", "kind": "ResourceQuota", **quota})
    # No quota controller runs here: write the usage it would compute (admission needs it to judge).
    kube.patch(QUOTAS, ns, "no-pods", {"status": {"hard": {"pods": "0"}, "used": {"pods": "0"}}}, "status")
    kube.create(FTJ, ns, finetunejob(ns))
    refused = _message_has("exceeded quota: no-pods")
    ftj = kube.wait_for(FTJ, ns, "sentiment", refused, TIMEOUT, "the FailedCreate message")
    assert ftj["status"]["phase"] == "Pending"
    running = condition(ftj, "Running")
    assert running is not None and running["reason"] == "FailedCreate" and "quota" in running["message"]
    assert kube.list(PODS, ns) == []


def test_a_retry_pod_the_api_server_refuses_shows_the_jobs_failed_create(
    operator, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    """The first trainer pod failed (counted against backoffLimit) and a quota refuses its replacement: the
    Job's FailedCreate must show, not 'waiting for the trainer pod to start' read from the finished pod's Events."""
    kube.create(FTJ, ns, finetunejob(ns, backoffLimit=3))
    kube.wait_for(JOBS, ns, JOB, exists, TIMEOUT)
    kubelet.start_job(ns, JOB)
    wait_phase(kube, ns, "sentiment", "Running")
    quota = {"metadata": {"name": "no-more-pods"}, "spec": {"hard": {"pods": "1"}}}
    kube.create(QUOTAS, ns, {"apiVersion": "v1", "kind": "ResourceQuota", **quota})
    # No quota controller runs here: write the usage it would compute (the failed pod still counts until removed).
    kube.patch(QUOTAS, ns, "no-more-pods", {"status": {"hard": {"pods": "1"}, "used": {"pods": "1"}}}, "status")
    kubelet.finish_job(ns, JOB, 1, '{"exitReason": "TrainerError", "message": "transient"}')
    refused = _message_has("exceeded quota: no-more-pods")
    ftj = kube.wait_for(FTJ, ns, "sentiment", refused, 60, "the FailedCreate message of the replacement pod")
    assert ftj["status"]["phase"] == "Pending"
    assert (condition(ftj, "Running") or {}).get("reason") == "FailedCreate"


def test_a_volume_that_cannot_be_mounted_shows_at_once(operator, kube: KubeTestClient, kubelet: FakeKubelet, ns: str):
    """The kubelet reports a volume it cannot mount only as a FailedMount Event on the pod (the pod itself just
    stays ContainerCreating): the operator watches those Events (events.k8s.io, filtered by the API server) and
    shows it on the FineTuneJob at once; the test operator runs no resync pass, so nothing else would."""
    kube.create(FTJ, ns, finetunejob(ns))
    pod = _trainer_pod(kube, ns)
    kubelet.bind(pod)
    name = pod["metadata"]["name"]
    _waiting(kube, ns, name, "ContainerCreating", "")
    wait_event(kube, ns, "sentiment", "JobCreated")
    stuck = 'MountVolume.SetUp failed for volume "output" : rpc error: code = Internal desc = mount failed: exit 32'
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.failedmount"},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": name,
            "namespace": ns,
            "uid": pod["metadata"]["uid"],
        },
        "reason": "FailedMount",
        "message": stuck,
        "type": "Warning",
        "source": {"component": "kubelet", "host": "envtest-node"},
        "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:00:00Z",
    }
    kube.create(EVENTS, ns, event)  # what the kubelet posts
    ftj = kube.wait_for(FTJ, ns, "sentiment", _message_has(stuck), TIMEOUT, "the kubelet's FailedMount")
    assert ftj["status"]["phase"] == "Pending"
    assert (condition(ftj, "Running") or {}).get("reason") == "FailedMount"


def test_a_failed_finetunejob_says_succeeded_false(operator, kube: KubeTestClient, kubelet: FakeKubelet, ns: str):
    """`kubectl wait --for=condition=Succeeded=false` and Argo CD read this condition."""
    kube.create(FTJ, ns, finetunejob(ns, backoffLimit=0))
    kube.wait_for(JOBS, ns, JOB, exists, TIMEOUT)
    kubelet.start_job(ns, JOB)
    kubelet.finish_job(ns, JOB, 1, '{"exitReason": "TrainerError", "message": "boom"}')
    ftj = wait_phase(kube, ns, "sentiment", "Failed")
    succeeded = condition(ftj, "Succeeded")
    assert succeeded is not None and succeeded["status"] == "False" and "boom" in succeeded["message"]
    assert (condition(ftj, "Failed") or {}).get("status") == "True"


def _trained(kube: KubeTestClient, kubelet: FakeKubelet, ns: str) -> None:
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, JOB, exists, TIMEOUT)
    kubelet.start_job(ns, JOB)
    kubelet.finish_job(ns, JOB, 0, "{}")
    wait_phase(kube, ns, "sentiment", "Succeeded")


def _status_of(type_: str, status: str, reason: str | None = None):
    def check(obj: dict[str, Any] | None) -> bool:
        found = condition(obj, type_) if obj is not None else None
        return found is not None and found["status"] == status and reason in (None, found["reason"])

    return check


def test_a_stuck_rollout_is_not_ready(operator, kube: KubeTestClient, kubelet: FakeKubelet, ns: str):
    """The old server pod still serves (Available) but the new template never becomes ready: not Ready, Progressing."""
    kube.create(MSV, ns, modelserve(ns, "plain", jobs=(), baseModel={"name": "org/base"}))
    kube.wait_for(DEPLOYMENTS, ns, "plain", exists, TIMEOUT)
    kubelet.deployment_ready(ns, "plain")
    msv = wait_phase(kube, ns, "plain", "Ready", res=MSV)
    assert (condition(msv, "Progressing") or {}).get("status") == "False"

    kube.patch(MSV, ns, "plain", {"spec": {"quantization": {"bits": 4}}})  # a new pod template: a rollout
    msv = kube.wait_for(MSV, ns, "plain", _status_of("Progressing", "True", "RolloutInProgress"), TIMEOUT, "rolling")
    assert msv["status"]["phase"] == "Deploying"
    assert (condition(msv, "Ready") or {}).get("status") == "False"
    assert (condition(msv, "Available") or {}).get("status") == "True"  # the old replica still serves
    assert msv["status"]["readyReplicas"] == 1

    kubelet.deployment_ready(ns, "plain")
    msv = wait_phase(kube, ns, "plain", "Ready", res=MSV)
    assert (condition(msv, "Progressing") or {}).get("status") == "False"


def test_a_modelserve_whose_finetunejob_went_away_is_not_available(
    operator, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    _trained(kube, kubelet, ns)
    kube.create(MSV, ns, modelserve(ns))
    kube.wait_for(DEPLOYMENTS, ns, "chat", exists, TIMEOUT)
    kubelet.deployment_ready(ns, "chat")
    msv = wait_phase(kube, ns, "chat", "Ready", res=MSV)
    assert (condition(msv, "Available") or {}).get("status") == "True"

    kube.delete(FTJ, ns, "sentiment")
    msv = kube.wait_for(MSV, ns, "chat", _status_of("Available", "False", "FineTuneJobNotFound"), TIMEOUT, "gone")
    assert msv["status"]["phase"] == "Failed"
    assert (condition(msv, "Ready") or {}).get("status") == "False"


def test_trainer_pod_is_burstable_pushes_with_its_own_token_and_names_no_uid(operator, kube: KubeTestClient, ns: str):
    """The pod the real Job controller creates, as PodSecurity `restricted` admitted it: requests by default (the API
    server computes qosClass), no fixed UID or fsGroup, and the Hub push's write token apart from the read token."""
    hub = {"repo": "acme/sentiment", "tokenSecretRef": {"name": "hub-write", "key": "token"}}
    kube.create(FTJ, ns, finetunejob(ns, resources={"gpus": 0}, output={"hub": hub}))
    pod = _trainer_pod(kube, ns)
    assert pod["status"]["qosClass"] == "Burstable"  # not BestEffort: not the first evicted under node pressure
    [container] = pod["spec"]["containers"]
    # the Hub model's scratch volume is requested as ephemeral storage (no model cache configured)
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "50Gi"}
    assert "runAsUser" not in pod["spec"]["securityContext"] and "fsGroup" not in pod["spec"]["securityContext"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"] if "valueFrom" in item}
    assert env == {"HF_TOKEN": {"name": "hf-token", "key": "token"}, "HF_PUSH_TOKEN": hub["tokenSecretRef"]}
