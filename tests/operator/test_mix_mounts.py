"""A dataset.mix trainer pod mounts every source like a single dataset's: each ConfigMap and claim once, read-only."""

from __future__ import annotations

from kubetune.api.resources import FineTuneJob
from kubetune.operator.manifests.trainer import trainer_children, trainer_model_storage
from kubetune.operator.reconcile import finetunejob as ftj_logic
from kubetune.operator.settings import OperatorSettings

from tests.cluster.helpers import finetunejob

SETTINGS = OperatorSettings(trainer_image="t:1", server_image="s:1")
MIX = [
    {"name": "qa", "configMap": {"name": "qa-data", "key": "train.jsonl"}, "weight": 3},
    {"name": "qa-more", "configMap": {"name": "qa-data", "key": "more.jsonl"}},
    {"name": "summaries", "configMap": {"name": "summaries", "key": "train.jsonl"}, "taskPrefix": "summarize: "},
    {"name": "corpus", "pvc": {"claimName": "corpus", "path": "docs"}},
]


def _pod(mix: list[dict]) -> dict:
    body = finetunejob("default", dataset={"mix": mix}, baseModel={"pvc": {"claimName": "models", "path": "m"}})
    body["metadata"].update(uid="uid-1", generation=1)
    ftj = FineTuneJob.model_validate(body)
    return trainer_children(ftj_logic.owner_of(ftj), ftj.spec, SETTINGS)[-1]["spec"]["template"]["spec"]


def test_every_source_of_a_mix_is_mounted_read_only_once():
    spec = _pod(MIX)
    configmaps = sorted(v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v)
    assert configmaps == ["qa-data", "sentiment-spec", "summaries"]
    claims = sorted(v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v)
    assert claims == ["corpus", "models", "sentiment-output"]
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    for path in ("/mnt/kubetune/configmap/qa-data", "/mnt/kubetune/configmap/summaries", "/mnt/kubetune/pvc/corpus"):
        assert mounts[path].get("readOnly") is True, path


def test_a_hub_source_in_a_mix_gets_the_download_storage():
    body = finetunejob("default", dataset={"mix": [*MIX[:1], {"name": "hub", "hf": {"name": "org/data"}}]})
    body["spec"]["baseModel"] = {"pvc": {"claimName": "models", "path": "m"}}
    spec = FineTuneJob.model_validate(body).spec
    assert trainer_model_storage(spec, SETTINGS) == trainer_model_storage(
        FineTuneJob.model_validate(finetunejob("default", dataset={"hf": {"name": "org/data"}})).spec, SETTINGS
    )
    without_hub = FineTuneJob.model_validate(
        finetunejob("default", dataset={"mix": MIX[:2]}, baseModel={"pvc": {"claimName": "models", "path": "m"}})
    ).spec
    assert trainer_model_storage(spec, SETTINGS) != trainer_model_storage(without_hub, SETTINGS)


def test_the_largest_mix_report_fits_the_trainer_report_limit():
    """metrics.sources of 16 sources with the longest names still pass the report ConfigMap's size check."""
    import json

    from kubetune.api.finetunejob import MAX_MIX_SOURCES
    from kubetune.api.runtime import REPORT_METRICS_KEY
    from kubetune.operator.reconcile.trainer_report import MAX_VALUE_BYTES, parse_report

    source = {"probability": 0.0625, "trainRows": 10**9, "evalRows": 10**7, "evalLoss": 1.2345678901234567}
    sources = [{"name": f"{index:02d}" + "x" * 61, **source} for index in range(MAX_MIX_SOURCES)]
    text = json.dumps({"trainLoss": 1.0, "evalLoss": 1.0, "steps": 10, "sources": sources})
    assert len(text) < MAX_VALUE_BYTES // 2
    report = parse_report({"metadata": {"name": "r"}, "data": {REPORT_METRICS_KEY: text}})
    assert report is not None and report.metrics is not None and len(report.metrics.sources or []) == MAX_MIX_SOURCES
