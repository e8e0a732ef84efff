"""The trainer cannot forge operator-owned status (real control plane, real RBAC): it reports progress and final
metrics to its own ConfigMap with the shipped client and its own ServiceAccount token; the operator validates what
it finds there and copies only progress and metrics. Its token is refused on the FineTuneJob's status."""

from __future__ import annotations

import pytest

from tests.support.kube.server import CONFIGMAPS, FTJ, JOBS, KubeError

from .helpers import exists, finetunejob, trainer_report_client, wait_phase

FORGED_OUTPUT = {"pvc": {"claimName": "someone-elses-claim", "path": "adapter"}, "method": "lora"}


def _progress(kube, ns: str, percent: int) -> dict:
    def reported(ftj: dict | None) -> bool:
        return ftj is not None and ((ftj.get("status") or {}).get("progress") or {}).get("percent") == percent

    ftj = kube.wait_for(FTJ, ns, "sentiment", reported, 30, what=f"to show progress {percent}%")
    assert ftj is not None
    return ftj


def test_the_trainer_reports_to_its_configmap_and_cannot_forge_status(
    control_plane, operator, kube, kubelet, ns, tmp_path
):
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    trainer = trainer_report_client(control_plane, ns, "sentiment", tmp_path)

    assert trainer.patch_status({"progress": {"step": 2, "totalSteps": 4, "percent": 50}})
    _progress(kube, ns, 50)

    # A forged phase and output next to real progress: only the validated progress is copied.
    forged = {"phase": "Succeeded", "output": FORGED_OUTPUT, "progress": {"step": 3, "totalSteps": 4, "percent": 75}}
    assert trainer.patch_status(forged)
    status = _progress(kube, ns, 75)["status"]
    assert status["phase"] == "Running" and "output" not in status

    # Malformed metrics are dropped (with a log line), never copied: the next valid report still arrives.
    assert trainer.patch_status(
        {"metrics": {"trainLoss": "low"}, "progress": {"step": 4, "totalSteps": 4, "percent": 100}}
    )
    status = _progress(kube, ns, 100)["status"]
    assert "metrics" not in status

    # Row counts, the published step and the eval loss while training reach the status and the EVAL LOSS column.
    metrics = {"evalLoss": 0.5, "truncatedRows": 3, "droppedRows": 1, "skippedRows": 2, "publishedStep": 4}
    progress = {"step": 4, "totalSteps": 4, "percent": 100, "evalLoss": 0.5}
    assert trainer.patch_status({"metrics": metrics, "progress": progress})
    copied = lambda ftj: (ftj or {}).get("status", {}).get("metrics") == metrics  # noqa: E731
    stored = kube.wait_for(FTJ, ns, "sentiment", copied, 30)
    assert stored["status"]["progress"]["evalLoss"] == 0.5

    # The status itself, the spec ConfigMap and the FineTuneJob are out of the token's reach.
    as_trainer = control_plane.plane.token_client((tmp_path / "token").read_text())
    try:
        for attempt in (
            lambda: as_trainer.patch(
                FTJ, ns, "sentiment", {"status": {"phase": "Succeeded", "output": FORGED_OUTPUT}}, "status"
            ),
            lambda: as_trainer.get(FTJ, ns, "sentiment"),
            lambda: as_trainer.patch(CONFIGMAPS, ns, "sentiment-spec", {"data": {"spec.json": "{}"}}),
        ):
            with pytest.raises(KubeError) as refused:
                attempt()
            assert refused.value.code == 403
    finally:
        as_trainer.close()
    assert kube.get(FTJ, ns, "sentiment")["status"]["phase"] == "Running"
