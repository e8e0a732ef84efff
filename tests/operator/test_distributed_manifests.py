"""Several trainer processes in the Job manifest (manifests/distributed.py)."""

from __future__ import annotations

import pytest
from kubetune.api import runtime
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.resources import FineTuneJob
from kubetune.operator.manifests.trainer import trainer_children
from kubetune.operator.reconcile import finetunejob as ftj_logic
from kubetune.operator.settings import OperatorSettings
from pydantic import ValidationError

from tests.cluster.helpers import finetunejob

SETTINGS = OperatorSettings(trainer_image="t:1", server_image="s:1")


def _children(**spec):
    body = finetunejob("default", **spec)
    body["metadata"].update(uid="uid-1", generation=1)
    ftj = FineTuneJob.model_validate(body)
    return trainer_children(ftj_logic.owner_of(ftj), ftj.spec, SETTINGS)


def _container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


def test_one_gpu_one_node_is_unchanged():
    job = _children()[-1]
    assert _container(job)["command"] == ["python", "-m", "kubetune_trainer"]
    assert "completionMode" not in job["spec"]
    assert not [c for c in _children() if c["kind"] == "Service"]


def test_several_gpus_run_one_process_each():
    job = _children(resources={"gpus": 4})[-1]
    container = _container(job)
    assert container["command"] == ["python", "-m", runtime.TRAINER_LAUNCH_MODULE]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    assert env[runtime.ENV_PROCS_PER_NODE] == "4" and env[runtime.ENV_NODES] == "1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert "completionMode" not in job["spec"]


def test_several_nodes_are_an_indexed_job_behind_a_headless_service():
    children = _children(resources={"gpus": 2, "nodes": 3}, output={"accessMode": "ReadWriteMany"})
    job, [service] = children[-1], [c for c in children if c["kind"] == "Service"]
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 3, 3)
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"] == "sentiment-nodes"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "sentiment-train"}
    env = {item["name"]: item["value"] for item in _container(job)["env"] if "value" in item}
    assert env[runtime.ENV_MASTER_ADDR] == "sentiment-train-0.sentiment-nodes"
    assert children.index(service) < len(children) - 1, "the Job stays the last child"


def test_several_nodes_need_a_shared_output_volume():
    with pytest.raises(ValidationError, match="ReadWriteMany"):
        FineTuneJobSpec.model_validate(finetunejob("ns", resources={"nodes": 2})["spec"])


def test_the_report_comes_from_the_pod_that_wrote_one():
    """Node 0 writes the summary; node 1 (no message) may finish later."""
    from kubetune.operator.reconcile.report import report_from_pods

    def pod(message: str, finished: str) -> dict:
        terminated = {"exitCode": 0, "message": message, "finishedAt": finished}
        return {"status": {"containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]}}

    node0 = pod('{"exitReason": "Succeeded", "metrics": {"steps": 12}}', "2026-01-01T00:00:01Z")
    report = report_from_pods([node0, pod("", "2026-01-01T00:00:02Z")], "trainer")
    assert report is not None and report.metrics is not None and report.metrics.steps == 12
