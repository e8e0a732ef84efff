import json

from tests.support.kube.server import FTJ, JOBS


def _ftj(ns):
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "sentiment", "namespace": ns},
        "spec": {
            "baseModel": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
            "dataset": {"configMap": {"name": "facts", "key": "train.jsonl"}, "format": "qa"},
            "training": {"epochs": 1, "maxSteps": 4},
            "resources": {"gpus": 1, "cpu": "4", "memory": "16Gi"},
        },
    }


def test_lifecycle(operator, kube, kubelet, ns):
    kube.create(FTJ, ns, _ftj(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", lambda o: o is not None, timeout=20)
    kubelet.start_job(ns, "sentiment-train")
    kube.wait_for(FTJ, ns, "sentiment", lambda o: (o.get("status") or {}).get("phase") == "Running", timeout=20)
    kubelet.finish_job(ns, "sentiment-train", 0, json.dumps({"metrics": {"trainLoss": 0.5}}))
    ftj = kube.wait_for(FTJ, ns, "sentiment", lambda o: (o.get("status") or {}).get("phase") == "Succeeded", timeout=20)
    print(ftj["status"])
