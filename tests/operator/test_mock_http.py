"""The realism layer over HTTP: routes, watch streams, validation and the request record."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.kube.recorder import ApiCall, ApiRequestRecorder
from tests.support.kube.server import CONFIGMAPS, FTJ, JOBS, KubeError

NS = "default"


def test_namespaces_route_and_discovery(cluster, kube):
    names = [ns["metadata"]["name"] for ns in kube.http.get("/api/v1/namespaces").json()["items"]]
    assert names == ["default"]
    assert kube.http.get("/api/v1/namespaces/default").json()["metadata"]["name"] == "default"
    group = kube.http.get("/apis/kubetune.dev/v1alpha1").json()
    assert {r["name"] for r in group["resources"]} >= {"finetunejobs", "finetunejobs/status"}
    missing = kube.http.get("/api/v1/namespaces/default/configmaps/nope")
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"


def test_watch_is_json_and_resumable(cluster, kube):
    first = kube.create(CONFIGMAPS, NS, {"metadata": {"name": "a"}})
    kube.create(CONFIGMAPS, NS, {"metadata": {"name": "b"}})
    params = {"watch": "true", "resourceVersion": first["metadata"]["resourceVersion"], "timeoutSeconds": "1"}
    with httpx.stream("GET", f"{cluster.url}/api/v1/namespaces/{NS}/configmaps", params=params) as response:
        assert response.headers["content-type"].startswith("application/json")
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]
    with httpx.stream(
        "GET", f"{cluster.url}/api/v1/namespaces/{NS}/configmaps", params={"watch": "true", "timeoutSeconds": "1"}
    ) as response:
        names = [json.loads(line)["object"]["metadata"]["name"] for line in response.iter_lines() if line]
    assert names == ["a", "b"]


def test_operator_writes_are_validated(cluster):
    operator = cluster.client("kubetune-operator/test")
    bad = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x", "bogus": 1}]}}},
    }
    with pytest.raises(KubeError) as exc:
        operator.create(JOBS, NS, bad)
    assert exc.value.code == 422 and "bogus" in exc.value.body["message"]
    operator.create(FTJ, NS, {"metadata": {"name": "f"}, "spec": {}})  # specs are not checked (see InvalidSpec)
    with pytest.raises(KubeError) as exc:
        operator.patch(FTJ, NS, "f", {"status": {"phase": "Exploded"}}, "status")
    assert exc.value.code == 422 and "status.phase" in exc.value.body["message"]
    assert len(cluster.validator.errors) == 2
    cluster.validator.errors.clear()  # expected here; otherwise the fixture fails the test
    cluster.recorder.reset()  # a pretend operator: keep its calls out of the session's RBAC record


def test_recorder_names_rbac_permissions(cluster):
    operator = cluster.client("kubetune-operator/test")
    operator.create(CONFIGMAPS, NS, {"metadata": {"name": "c"}})
    operator.patch(CONFIGMAPS, NS, "c", {"data": {"a": "b"}})
    operator.get(CONFIGMAPS, NS, "c")
    operator.list(CONFIGMAPS, NS)
    cluster.client().get(CONFIGMAPS, NS, "c")  # a test's own request is not the operator's
    assert cluster.recorder.permissions() == {
        ("create", "", "configmaps"),
        ("patch", "", "configmaps"),
        ("get", "", "configmaps"),
        ("list", "", "configmaps"),
    }
    cluster.recorder.reset()


def test_recorder_subresources():
    recorder = ApiRequestRecorder()
    recorder.record(ApiCall("patch", "kubetune.dev", "finetunejobs", "status", "ns", "kopf/1.45"))
    recorder.record(ApiCall("patch", "kubetune.dev", "finetunejobs", "status", "ns", "kubetune-trainer/1"))
    assert recorder.permissions() == {("patch", "kubetune.dev", "finetunejobs/status")}
    assert recorder.permissions(("kubetune-trainer/",)) == {("patch", "kubetune.dev", "finetunejobs/status")}


def test_an_operator_writing_a_custom_resource_spec_is_caught(cluster, kube):
    kube.create(FTJ, NS, {"metadata": {"name": "f"}, "spec": {"suspend": False}})
    operator = cluster.client("kopf/test")
    operator.patch(FTJ, NS, "f", {"metadata": {"annotations": {"kubetune.dev/x": "1"}}})  # bookkeeping is fine
    assert cluster.validator.errors == []
    operator.patch(FTJ, NS, "f", {"spec": {"suspend": True}})
    assert "wrote the spec of FineTuneJob f" in cluster.validator.errors[0]
    cluster.validator.errors.clear()
    cluster.recorder.reset()
