"""`kubetune results` refuses clearly when there is nothing to fetch (no such job, not finished, failed, an older
trainer, a report that is not the job's), writes only the known file names, and the operator keeps the result
files the trainer copies into its report ConfigMap out of its watch cache. The whole path against a real API
server is tests/cluster/test_results.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubetune.operator.handlers import _configmap_by_name
from kubetune.operator.reconcile.trainer_report import parse_report
from kubetune.results import ResultsError, fetch_results, parse_target

UID = "0b7c6f0e-1111-2222-3333-444455556666"


class Reader:
    """Objects by (kind, name), as Kube.get returns them."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}

    def get(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((res.kind, name))


def finetunejob(phase: str | None, message: str | None = None) -> dict[str, Any]:
    status = {"phase": phase, "message": message, "output": {"pvc": {"claimName": "job-output", "path": "runs/u"}}}
    return {"kind": "FineTuneJob", "metadata": {"name": "job", "uid": UID}, "status": status if phase else {}}


def report(data: dict[str, str], binary: dict[str, str] | None = None, owner: str = UID) -> dict[str, Any]:
    meta = {"name": "job-report", "ownerReferences": [{"kind": "FineTuneJob", "name": "job", "uid": owner}]}
    return {"kind": "ConfigMap", "metadata": meta, "data": data, "binaryData": binary or {}}


RESULTS = {
    "progress": json.dumps({"step": 4, "totalSteps": 4, "percent": 100}),
    "metrics": json.dumps({"evalLoss": 0.5}),
    "results": json.dumps(
        {
            "files": {
                "README.md": {"key": "results.README.md"},
                "human-eval.csv": {"key": "results.human-eval.csv", "rows": 50, "rowsIncluded": 2, "volumePath": "c/h"},
                "../evil": {"key": "results.../evil"},
            }
        }
    ),
    "results.README.md": "# card\n",
    "results.human-eval.csv": "id,prompt\r\n1,a\r\n2,b\r\n",
    "results.../evil": "x",
}


@pytest.mark.parametrize(
    ("target", "name"), [("ftj/job", "job"), ("finetunejob/job", "job"), ("FineTuneJobs.kubetune.dev/job", "job")]
)
def test_targets_take_kubectl_forms(target: str, name: str):
    assert parse_target(target) == name
    assert parse_target("job") == "job"
    with pytest.raises(ResultsError, match="expected ftj/NAME"):
        parse_target("pod/job")


@pytest.mark.parametrize(
    ("objects", "error"),
    [
        ((), "no FineTuneJob 'job' in namespace 'team-a'"),
        ((finetunejob(None),), r"has not finished yet \(phase Pending\)"),
        ((finetunejob("Running"),), r"has not finished yet \(phase Running\)"),
        ((finetunejob("Failed", "OutOfMemory: ..."),), "failed, so it has no results: OutOfMemory"),
        ((finetunejob("Succeeded"), report({"metrics": "{}"})), "reported no result files: its trainer image predates"),
        ((finetunejob("Succeeded"),), r"output volume \(claim job-output, next to runs/u\)"),
        ((finetunejob("Succeeded"), report(RESULTS, owner="someone-else")), "not FineTuneJob job's report"),
    ],
)
def test_nothing_to_fetch_is_said_plainly(objects: tuple, error: str, tmp_path: Path):
    with pytest.raises(ResultsError, match=error):
        fetch_results(Reader(*objects), "team-a", "job", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_known_files_are_written_and_a_cut_sheet_is_noted(tmp_path: Path):
    fetched = fetch_results(Reader(finetunejob("Succeeded"), report(RESULTS)), "team-a", "job", tmp_path)
    assert [path.name for path in fetched.files] == ["README.md", "human-eval.csv"]
    assert (tmp_path / "human-eval.csv").read_bytes() == b"id,prompt\r\n1,a\r\n2,b\r\n"
    assert not (tmp_path.parent / "evil").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "human-eval.csv",
    ]
    assert fetched.notes == [
        "human-eval.csv: the first 2 of 50 rows (the report ConfigMap's size budget); the whole sheet is on the "
        "output volume at c/h"
    ]


def test_the_operator_caches_report_configmaps_without_their_result_files():
    body = report(RESULTS, {"results.loss-curves.png": base64.b64encode(b"\x89PNG").decode()})
    body["metadata"]["labels"] = {"app.kubernetes.io/component": "trainer-report"}
    cached = _configmap_by_name(body, namespace="team-a", name="job-report", labels=body["metadata"]["labels"])
    kept = cached[("team-a", "job-report")]
    assert set(kept["data"]) == {"progress", "metrics"} and "binaryData" not in kept
    assert parse_report(kept) == parse_report(body), "what the operator reads is unchanged"
    other = {"kind": "ConfigMap", "metadata": {"name": "x-spec"}, "data": {"spec.json": "{}"}}
    assert _configmap_by_name(other, namespace="team-a", name="x-spec", labels={})[("team-a", "x-spec")] == other
