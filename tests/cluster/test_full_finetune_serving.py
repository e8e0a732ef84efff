"""A fully fine-tuned model on the real control plane: the FineTuneJob's status says method full, a ModelServe that
lists it as an adapter fails with NotAnAdapter and the baseModel to use, and one that serves its output folder as
the base model is deployed with that volume."""

from __future__ import annotations

import json

from tests.support.envtest.fixtures import RealOperatorControl
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import CONFIGMAPS, DEPLOYMENTS, FTJ, JOBS, MSV, KubeTestClient

from .helpers import condition, exists, finetunejob, modelserve, wait_phase

TIMEOUT = 30


def test_a_full_model_is_served_as_a_base_and_refused_as_an_adapter(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    kube.create(FTJ, ns, finetunejob(ns, "whole", method="full"))
    kube.wait_for(JOBS, ns, "whole-train", exists, TIMEOUT)
    kubelet.start_job(ns, "whole-train")
    kubelet.finish_job(ns, "whole-train", 0, "{}")
    job = wait_phase(kube, ns, "whole", "Succeeded")
    assert job["status"]["output"]["method"] == "full"
    folder = job["status"]["output"]["pvc"]

    kube.create(MSV, ns, modelserve(ns, "as-adapter", jobs=("whole",)))
    msv = wait_phase(kube, ns, "as-adapter", "Failed", res=MSV)
    assert (condition(msv, "AdaptersReady") or {}).get("reason") == "NotAnAdapter"
    use_instead = f"baseModel: {{pvc: {{claimName: {folder['claimName']}, path: {folder['path']}}}}}"
    assert use_instead in msv["status"]["message"]
    assert kube.find(DEPLOYMENTS, ns, "as-adapter") is None

    kube.create(MSV, ns, modelserve(ns, "as-base", jobs=(), baseModel={"pvc": folder}))
    wait_phase(kube, ns, "as-base", "Deploying", res=MSV)
    served = json.loads(kube.get(CONFIGMAPS, ns, "as-base-config")["data"]["serve.json"])
    assert served["baseModel"]["pvc"] == folder and served["adapters"] == []
    volumes = kube.get(DEPLOYMENTS, ns, "as-base")["spec"]["template"]["spec"]["volumes"]
    claims = [(volume.get("persistentVolumeClaim") or {}).get("claimName") for volume in volumes]
    assert folder["claimName"] in claims
