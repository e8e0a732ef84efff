"""ModelServe scenarios: waiting for adapters, deploying, failing clearly, following changes, repairing drift."""

from __future__ import annotations

import json

from tests.support.kube.server import CONFIGMAPS, DEPLOYMENTS, FTJ, JOBS, MSV, SERVICES

from .helpers import NS, condition, exists, finetunejob, gone, modelserve, wait_phase


def train(kube, kubelet, name: str = "sentiment", **spec) -> dict:
    kube.create(FTJ, NS, finetunejob(name, **spec))
    kube.wait_for(JOBS, NS, f"{name}-train", exists)
    kubelet.start_job(NS, f"{name}-train")
    kubelet.finish_job(NS, f"{name}-train", 0, "{}")
    return wait_phase(kube, name, "Succeeded")


def serve_config(kube, name: str = "chat") -> dict:
    return json.loads(kube.get(CONFIGMAPS, NS, f"{name}-config")["data"]["serve.json"])


def template(kube, name: str = "chat") -> dict:
    return kube.get(DEPLOYMENTS, NS, name)["spec"]["template"]


def test_waits_for_its_finetunejob_then_deploys(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob())
    kube.create(MSV, NS, modelserve(apiKeySecretRef={"name": "api-key", "key": "key"}))
    msv = wait_phase(kube, "chat", "WaitingForAdapters", res=MSV)
    ready = condition(msv, "AdaptersReady")
    assert ready["status"] == "False" and "FineTuneJob 'sentiment'" in ready["message"]
    assert kube.find(DEPLOYMENTS, NS, "chat") is None

    kube.wait_for(JOBS, NS, "sentiment-train", exists)
    kubelet.start_job(NS, "sentiment-train")
    kubelet.finish_job(NS, "sentiment-train", 0, "{}")
    msv = wait_phase(kube, "chat", "Deploying", res=MSV)
    assert msv["status"]["adapters"] == [
        {"name": "sentiment", "pvc": {"claimName": "sentiment-output", "path": "adapter"}, "fineTuneJob": "sentiment"}
    ]
    config = serve_config(kube)
    assert config["baseModel"]["name"] == "Qwen/Qwen2.5-0.5B-Instruct"  # from the job: the spec named none
    assert config["adapters"][0]["pvc"] == {"claimName": "sentiment-output", "path": "adapter"}

    pod = template(kube)["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "kubetune_server"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBETUNE_SERVE_CONFIG"]["value"] == "/etc/kubetune/serve.json"
    assert env["KUBETUNE_PORT"]["value"] == "8000"
    assert env["KUBETUNE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "api-key", "key": "key"}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/kubetune/pvc/sentiment-output"]["readOnly"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    service = kube.get(SERVICES, NS, "chat")
    assert service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"] == kube.get(DEPLOYMENTS, NS, "chat")["spec"]["selector"]["matchLabels"]

    kubelet.deployment_ready(NS, "chat")
    msv = wait_phase(kube, "chat", "Ready", res=MSV)
    assert msv["status"]["url"] == "http://chat.default.svc.cluster.local:8000/v1"
    assert msv["status"]["readyReplicas"] == 1
    assert condition(msv, "Available")["status"] == "True"
    assert msv["status"]["observedGeneration"] == 1


def test_failed_or_missing_finetunejob_fails_the_modelserve(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob("broken", backoffLimit=0))
    kube.wait_for(JOBS, NS, "broken-train", exists)
    kubelet.start_job(NS, "broken-train")
    kubelet.finish_job(NS, "broken-train", 1, "boom")
    wait_phase(kube, "broken", "Failed")

    kube.create(MSV, NS, modelserve("on-failed", jobs=("broken",)))
    msv = wait_phase(kube, "on-failed", "Failed", res=MSV)
    assert condition(msv, "AdaptersReady")["reason"] == "FineTuneJobFailed"
    assert "FineTuneJob 'broken' failed" in msv["status"]["message"]

    kube.create(MSV, NS, modelserve("on-missing", jobs=("nope",)))
    msv = wait_phase(kube, "on-missing", "Failed", res=MSV)
    assert condition(msv, "AdaptersReady")["reason"] == "FineTuneJobNotFound"
    assert "'nope' does not exist" in msv["status"]["message"]
    assert kube.find(DEPLOYMENTS, NS, "on-missing") is None

    train(kube, kubelet, "nope")  # created later (GitOps order): the ModelServe recovers
    wait_phase(kube, "on-missing", "Deploying", res=MSV)


def test_deleted_or_edited_children_are_repaired(operator, kube, kubelet):
    train(kube, kubelet)
    kube.create(MSV, NS, modelserve())
    first = kube.wait_for(DEPLOYMENTS, NS, "chat", exists)
    kube.wait_for(SERVICES, NS, "chat", exists)

    kube.delete(DEPLOYMENTS, NS, "chat")
    kube.wait_for(
        DEPLOYMENTS,
        NS,
        "chat",
        lambda d: d is not None and d["metadata"]["uid"] != first["metadata"]["uid"],
        what="to be recreated",
    )
    kube.patch(DEPLOYMENTS, NS, "chat", {"spec": {"replicas": 5}})
    kube.wait_for(DEPLOYMENTS, NS, "chat", lambda d: d["spec"]["replicas"] == 1, what="replicas to be restored")
    kube.delete(SERVICES, NS, "chat")
    kube.wait_for(SERVICES, NS, "chat", exists, what="to be recreated")
    kube.patch(SERVICES, NS, "chat", {"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": "http"}]}})
    kube.wait_for(SERVICES, NS, "chat", lambda svc: svc["spec"]["ports"][0]["port"] == 8000, what="port restored")
    kubelet.deployment_ready(NS, "chat")
    wait_phase(kube, "chat", "Ready", res=MSV)


def test_spec_changes_patch_the_deployment_and_hot_reload_adapters(operator, kube, kubelet):
    train(kube, kubelet)
    train(kube, kubelet, "other", output={"pvc": {"claimName": "sentiment-output", "path": "other"}})
    kube.create(MSV, NS, modelserve())
    kube.wait_for(DEPLOYMENTS, NS, "chat", exists)
    kubelet.deployment_ready(NS, "chat")
    wait_phase(kube, "chat", "Ready", res=MSV)
    before = template(kube)

    # An adapter on an already-mounted claim: only serve.json changes (the server hot-reloads it).
    adapters = [
        {"name": "sentiment", "fineTuneJobRef": {"name": "sentiment"}},
        {"name": "other", "fineTuneJobRef": {"name": "other"}},
    ]
    kube.patch(MSV, NS, "chat", {"spec": {"adapters": adapters}})
    kube.wait_for(CONFIGMAPS, NS, "chat-config", lambda cm: "other/adapter" in cm["data"]["serve.json"])
    assert template(kube) == before

    # A new claim needs a new volume: the pod template changes (a rolling update).
    adapters.append({"name": "external", "pvc": {"claimName": "team-adapters", "path": "v2"}})
    kube.patch(MSV, NS, "chat", {"spec": {"adapters": adapters, "replicas": 2}})
    deployment = kube.wait_for(DEPLOYMENTS, NS, "chat", lambda d: d["spec"]["replicas"] == 2)
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"sentiment-output", "team-adapters"}
    msv = kube.wait_for(MSV, NS, "chat", lambda m: m["status"].get("observedGeneration") == 3)
    assert msv["status"]["adapterNames"] == "sentiment,other,external"

    # A change the server reads only at start (here quantization) restarts the pods via the hash annotation.
    kube.patch(MSV, NS, "chat", {"spec": {"quantization": {"bits": 4}}})
    kube.wait_for(
        DEPLOYMENTS,
        NS,
        "chat",
        lambda d: d["spec"]["template"]["metadata"]["annotations"] != before["metadata"]["annotations"],
        what="to roll out",
    )


def test_progress_deadline_exceeded_fails(operator, kube, kubelet):
    kube.create(MSV, NS, modelserve("plain", jobs=(), baseModel={"name": "org/base"}))
    kube.wait_for(DEPLOYMENTS, NS, "plain", exists)
    kubelet.deployment_deadline_exceeded(NS, "plain")
    msv = wait_phase(kube, "plain", "Failed", res=MSV)
    assert condition(msv, "Ready")["reason"] == "ProgressDeadlineExceeded"


def test_deleting_the_modelserve_deletes_its_children(operator, kube):
    kube.create(MSV, NS, modelserve("plain", jobs=(), baseModel={"name": "org/base"}))
    kube.wait_for(SERVICES, NS, "plain", exists)
    kube.delete(MSV, NS, "plain")
    for res, name in [(DEPLOYMENTS, "plain"), (SERVICES, "plain"), (CONFIGMAPS, "plain-config")]:
        kube.wait_for(res, NS, name, gone, what="to be garbage-collected")
