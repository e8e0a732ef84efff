"""Pure storage decisions: run folders, where a Job says it writes, model cache vs scratch, shared claims, the
replica check and adapters kept from the store after their FineTuneJob is gone."""

from __future__ import annotations

from kubetune.api import ModelServeStatus, PvcPath, ResolvedAdapter
from kubetune.api.modelserve import ServedAdapter
from kubetune.api.resources import ModelServe
from kubetune.api.storage import ModelCacheSpec
from kubetune.operator.manifests import storage
from kubetune.operator.reconcile.finetunejob import preemption
from kubetune.operator.reconcile.modelserve import resolve_adapters, storage_refusal
from kubetune.operator.settings import OperatorSettings

SETTINGS = OperatorSettings()
CACHED = OperatorSettings(model_cache_claim="models-cache", adapter_store_claim="adapters")


def test_each_run_has_its_own_folder_and_the_job_says_where():
    folder = storage.run_folder(PvcPath(claim_name="shared", path="team/a"), "uid-1")
    assert folder == PvcPath(claim_name="shared", path="team/a/runs/uid-1")
    assert storage.run_folder(PvcPath(claim_name="x-output"), "uid-1").path == "runs/uid-1"
    job = {"spec": {"template": {"spec": {"containers": [{"args": ["--output", "/mnt/kubetune/pvc/x-output"]}]}}}}
    assert storage.output_of_job(job) == PvcPath(claim_name="x-output", path="")  # a Job of an older operator
    assert storage.output_of_job({"spec": {}}) is None


def test_model_storage_prefers_the_objects_choice_then_the_operators_cache_then_scratch():
    assert storage.model_storage(None, True, SETTINGS) == storage.ModelStorage(None, "50Gi")
    assert storage.model_storage(None, False, CACHED) == storage.ModelStorage(None, "1Gi")  # a pvc model: no cache
    assert storage.model_storage(None, True, CACHED) == storage.ModelStorage("models-cache", "1Gi")
    own = ModelCacheSpec(claim_name="team-cache")
    assert storage.model_storage(own, True, CACHED).cache_claim == "team-cache"
    off = ModelCacheSpec(disabled=True, scratch_size="80Gi")
    assert storage.model_storage(off, True, CACHED) == storage.ModelStorage(None, "80Gi")


def test_only_the_operators_default_cache_claim_is_created_and_never_owned():
    created = storage.cache_claim("team", storage.ModelStorage("models-cache", "1Gi"), CACHED)
    assert created["spec"]["accessModes"] == ["ReadWriteMany"] and "ownerReferences" not in created["metadata"]
    assert storage.cache_claim("team", storage.ModelStorage("team-cache", "1Gi"), CACHED) is None
    assert storage.store_claim("team", SETTINGS) is None
    assert storage.store_claim("team", CACHED)["metadata"]["name"] == "adapters"


def test_replicas_on_several_nodes_need_claims_several_nodes_can_mount():
    mounted = {"adapters": True, "models-cache": False}
    assert storage_refusal(1, mounted, {"adapters": ["ReadWriteOnce"]}) is None
    assert storage_refusal(2, mounted, {"adapters": ["ReadOnlyMany"], "models-cache": ["ReadWriteMany"]}) is None
    refusal = storage_refusal(2, mounted, {"adapters": ["ReadWriteMany"], "models-cache": ["ReadOnlyMany"]})
    assert refusal is not None and "models-cache (ReadOnlyMany)" in refusal  # the cache is written to
    assert storage_refusal(3, mounted, {}) is None  # claims not found: the pods' FailedMount will say


def serve(*jobs: str) -> ModelServe:
    return ModelServe.model_validate(
        {
            "apiVersion": "kubetune.dev/v1alpha1",
            "kind": "ModelServe",
            "metadata": {"name": "chat", "namespace": "team", "uid": "u"},
            "spec": {"adapters": [{"name": job, "fineTuneJobRef": {"name": job}} for job in jobs]},
        }
    )


def test_an_adapter_in_the_store_is_kept_when_its_finetunejob_is_gone():
    store_path = PvcPath(claim_name="adapters", path="adapters/a/u1")
    in_store = ServedAdapter(name="a", pvc=store_path, fine_tune_job="a", state="Loaded", loaded_replicas=2)
    on_output = ServedAdapter(name="a", pvc=PvcPath(claim_name="a-output", path="runs/u1/adapter"), fine_tune_job="a")
    base = {"name": "org/base"}
    kept = resolve_adapters(serve("a"), {"a": None}, ModelServeStatus(adapters=[in_store], base_model=base), "adapters")
    assert kept.adapters == [ResolvedAdapter(name="a", pvc=store_path, fine_tune_job="a")]
    assert not kept.failed and "is gone" in kept.kept[0]
    assert kept.base_model is not None and kept.base_model.name == "org/base"
    lost = resolve_adapters(serve("a"), {"a": None}, ModelServeStatus(adapters=[on_output]), "adapters")
    assert lost.failed and lost.failed[0][0] == "FineTuneJobNotFound"
    assert resolve_adapters(serve("a"), {"a": None}, ModelServeStatus(adapters=[in_store]), "").failed


def test_a_pod_stopped_on_sigterm_is_shown_as_preempted():
    said = '{"exitReason": "Preempted", "exitCode": 69, "message": "stopped by SIGTERM at step 20"}'

    def pod(name: str, created: str, code: int) -> dict:
        terminated = {"exitCode": code, "message": said if code == 69 else "boom"}
        status = {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]}
        return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}

    reason, message = preemption([pod("t-1", "2026-01-01T00:00:00Z", 1), pod("t-2", "2026-01-01T00:01:00Z", 69)])
    assert reason == "Preempted" and "t-2 was stopped (SIGTERM): stopped by SIGTERM at step 20" in message
    assert preemption([pod("t-1", "2026-01-01T00:02:00Z", 1), pod("t-2", "2026-01-01T00:01:00Z", 69)]) is None
    assert preemption([]) is None
