"""The realism layer's store: the API-server guarantees the operator relies on."""

from __future__ import annotations

import pytest

from tests.support.kube.patching import merge_patch
from tests.support.kube.resources import builtin_kinds, crd_kind, load_crds
from tests.support.kube.selectors import field_matcher, label_matcher
from tests.support.kube.state import ApiError, ClusterState


@pytest.fixture
def state() -> ClusterState:
    _, kinds = builtin_kinds()
    kinds += [crd_kind(crd)[2] for crd in load_crds()]
    return ClusterState(kinds, history_limit=50)


def kind(state, group, plural):
    return state.kind(group, plural)


def test_create_assigns_identity_and_namespace(state):
    jobs = kind(state, "batch", "jobs")
    obj = state.create(jobs, "ns1", {"metadata": {"name": "a"}, "spec": {}, "status": {"active": 9}})
    meta = obj["metadata"]
    assert meta["namespace"] == "ns1" and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["resourceVersion"] == "1" and meta["generation"] == 1
    assert obj["apiVersion"] == "batch/v1" and obj["kind"] == "Job"
    assert "status" not in obj  # status only through the subresource
    with pytest.raises(ApiError) as exc:
        state.create(jobs, "ns1", {"metadata": {"name": "a"}})
    assert exc.value.code == 409 and exc.value.reason == "AlreadyExists"
    named = state.create(jobs, "ns1", {"metadata": {"generateName": "run-"}})
    assert named["metadata"]["name"].startswith("run-") and len(named["metadata"]["name"]) == 9


def test_status_subresource_and_generation(state):
    ftj = kind(state, "kubetune.dev", "finetunejobs")
    state.create(ftj, "ns", {"metadata": {"name": "x"}, "spec": {"suspend": False}})
    obj = state.patch(
        ftj,
        "ns",
        "x",
        {"status": {"phase": "Running"}, "spec": {"suspend": True}},
        "application/merge-patch+json",
        "status",
    )
    assert obj["status"] == {"phase": "Running"} and obj["spec"] == {"suspend": False}
    assert obj["metadata"]["generation"] == 1
    obj = state.patch(
        ftj, "ns", "x", {"spec": {"suspend": True}, "status": {"phase": "X"}}, "application/merge-patch+json"
    )
    assert obj["metadata"]["generation"] == 2 and obj["status"] == {"phase": "Running"}
    same = state.patch(ftj, "ns", "x", {"spec": {"suspend": True}}, "application/merge-patch+json")
    assert same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]  # no-op write


def test_failed_json_patch_test_is_422_and_stale_merge_is_409(state):
    cms = kind(state, "", "configmaps")
    obj = state.create(cms, "ns", {"metadata": {"name": "c"}})
    test = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "999"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
    ]
    with pytest.raises(ApiError) as exc:
        state.patch(cms, "ns", "c", test, "application/json-patch+json")
    assert exc.value.code == 422
    test[0]["value"] = obj["metadata"]["resourceVersion"]
    assert state.patch(cms, "ns", "c", test, "application/json-patch+json")["metadata"]["finalizers"] == ["f"]
    with pytest.raises(ApiError) as exc:
        state.patch(cms, "ns", "c", {"metadata": {"resourceVersion": "1"}, "data": {}}, "application/merge-patch+json")
    assert exc.value.code == 409


def test_job_template_is_immutable(state):
    jobs = kind(state, "batch", "jobs")
    state.create(jobs, "ns", {"metadata": {"name": "j"}, "spec": {"template": {"a": 1}, "suspend": False}})
    state.patch(jobs, "ns", "j", {"spec": {"suspend": True}}, "application/merge-patch+json")
    with pytest.raises(ApiError) as exc:
        state.patch(jobs, "ns", "j", {"spec": {"template": {"a": 2}}}, "application/merge-patch+json")
    assert exc.value.code == 422 and "immutable" in exc.value.message


def test_finalizers_block_deletion_until_removed(state):
    cms = kind(state, "", "configmaps")
    state.create(cms, "ns", {"metadata": {"name": "c", "finalizers": ["x/y"]}})
    marked = state.delete(cms, "ns", "c")
    assert marked["metadata"]["deletionTimestamp"]
    assert state.get(cms, "ns", "c")["metadata"]["deletionTimestamp"]
    state.patch(cms, "ns", "c", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    with pytest.raises(ApiError) as exc:
        state.get(cms, "ns", "c")
    assert exc.value.code == 404 and exc.value.reason == "NotFound"


def test_garbage_collection_follows_owner_references(state):
    jobs, pods, cms = kind(state, "batch", "jobs"), kind(state, "", "pods"), kind(state, "", "configmaps")
    owner = state.create(cms, "ns", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    job = state.create(jobs, "ns", {"metadata": {"name": "j", "ownerReferences": [ref]}})
    job_ref = {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": job["metadata"]["uid"]}
    state.create(pods, "ns", {"metadata": {"name": "p", "ownerReferences": [job_ref]}})
    other = state.create(cms, "ns", {"metadata": {"name": "other"}})
    other_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": other["metadata"]["uid"]}
    state.create(cms, "ns", {"metadata": {"name": "shared", "ownerReferences": [ref, other_ref]}})
    state.delete(cms, "ns", "owner")
    assert state.list(jobs, "ns")[0] == [] and state.list(pods, "ns")[0] == []  # cascades through the Job
    assert [o["metadata"]["name"] for o in state.list(cms, "ns")[0]] == ["other", "shared"]  # one owner left


def test_watch_history_resumes_and_expires(state):
    cms = kind(state, "", "configmaps")
    first = state.create(cms, "ns", {"metadata": {"name": "a", "labels": {"app": "x"}}})
    state.create(cms, "ns", {"metadata": {"name": "b"}})
    events, reached = state.events_since(cms, int(first["metadata"]["resourceVersion"]))
    assert [(e[1], e[2]["metadata"]["name"]) for e in events] == [("ADDED", "b")]
    assert reached == state.revision
    events, _ = state.events_since(cms, 0, label_selector="app=x")
    assert [e[2]["metadata"]["name"] for e in events] == ["a"]
    for index in range(60):
        state.create(cms, "ns", {"metadata": {"name": f"n{index}"}})
    with pytest.raises(ApiError) as exc:
        state.events_since(cms, 1)
    assert exc.value.code == 410


def test_selectors():
    match = label_matcher("app=x,tier!=db,env in (a, b),!legacy,owner")
    assert match({"app": "x", "env": "a", "owner": "me"})
    assert not match({"app": "x", "env": "c", "owner": "me"})
    assert not match({"app": "x", "env": "a", "owner": "me", "legacy": "1"})
    assert label_matcher("")({})
    fields = field_matcher("metadata.name=a,status.phase!=Running")
    assert fields({"metadata": {"name": "a"}, "status": {"phase": "Pending"}})
    assert not fields({"metadata": {"name": "a"}, "status": {"phase": "Running"}})


def test_merge_patch_semantics():
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }


def test_json_patch_operations():
    from tests.support.kube.patching import PatchTestFailed, json_patch

    doc = {"a": {"b": [1, 2]}, "c": 1}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": 2},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "add", "path": "/x~1y", "value": True},
        ],
    )
    assert out == {"a": {"b": [2, 3]}, "c": 2, "e": 2, "x/y": True} and doc["c"] == 1
    with pytest.raises(PatchTestFailed):
        json_patch(doc, [{"op": "test", "path": "/c", "value": 5}])
    with pytest.raises(PatchTestFailed):
        json_patch(doc, [{"op": "test", "path": "/missing", "value": 5}])
