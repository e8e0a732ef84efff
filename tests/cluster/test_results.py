"""`kubetune results` against a real API server: the trainer's own client and ServiceAccount token copy the result
files into its report ConfigMap (a human-eval sheet larger than a ConfigMap may hold is cut to whole rows, and the
API server admits the object), the operator's status keeps only progress and metrics, and the CLI, with a user's
kubeconfig, refuses while the job runs and then writes the files byte for byte."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from kubetune.api.runtime import HUMAN_EVAL_FILE, LOSS_CURVES_FILE, METRICS_FILE, MODEL_CARD_FILE
from kubetune.cli import main
from kubetune_trainer.human_eval import COLUMNS
from kubetune_trainer.loss_curves import draw_loss_curves
from kubetune_trainer.reporting import KubeStatusSink
from kubetune_trainer.results_report import result_files

from tests.support.kube.server import CONFIGMAPS, FTJ, JOBS

from .helpers import exists, finetunejob, trainer_report_client, wait_phase

# ~1.2 MiB of rows with commas, quotes, newlines and Hangul: more than a ConfigMap may hold (1 MiB).
SHEET_ROWS = [
    [str(n), f'Review {n}: "좋아요, 정말로"\nsecond line', "positive", "neutral, maybe", f'"{n}"', "", ""]
    for n in range(1, 15001)
]


def _write_outputs(output: Path) -> dict[str, bytes]:
    """A finished run's files, written the way the trainer writes them."""
    adapter = output / "adapter"
    adapter.mkdir(parents=True)
    (adapter / MODEL_CARD_FILE).write_text("# LoRA adapter\n\n![loss](loss-curves.png)\n", encoding="utf-8")
    (adapter / METRICS_FILE).write_text(json.dumps({"evalLoss": 0.5, "steps": 4}) + "\n", encoding="utf-8")
    history = [{"loss": 2.0 - step / 4, "step": step} for step in range(1, 5)] + [{"eval_loss": 1.4, "step": 4}]
    assert draw_loss_curves(history, adapter / LOSS_CURVES_FILE)
    with (output / HUMAN_EVAL_FILE).open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([COLUMNS, *SHEET_ROWS])
    files = result_files(output)
    return {name: path.read_bytes() for name, path in files.items()}


def _results(kubeconfig: Path, ns: str | None, target: Path, capsys) -> tuple[int, str, str]:
    """Run the CLI; without `ns` it takes the kubeconfig context's namespace, as kubectl does."""
    namespace = ["-n", ns] if ns else []
    code = main(["results", "ftj/sentiment", *namespace, "--output", str(target), "--kubeconfig", str(kubeconfig)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_results_are_fetched_with_a_kubeconfig_once_the_job_succeeded(
    control_plane, operator, kube, kubelet, ns, tmp_path, capsys
):
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    plane = control_plane.plane
    kubeconfig = plane.write_admin_kubeconfig(tmp_path / "user.kubeconfig", namespace=ns)
    target = tmp_path / "fetched"

    code, out, err = _results(kubeconfig, ns, target, capsys)
    assert code == 1 and out == "" and "has not finished yet (phase Running)" in err

    sink = KubeStatusSink(trainer_report_client(control_plane, ns, "sentiment", tmp_path))
    originals = _write_outputs(tmp_path / "output")
    assert len(originals[HUMAN_EVAL_FILE]) > 1024 * 1024
    sink.results(result_files(tmp_path / "output"))
    report = kube.get(CONFIGMAPS, ns, "sentiment-report")
    assert "results" in report["data"], "the API server admitted the report with the files"
    metrics = {"evalLoss": 0.5, "steps": 4}
    assert sink.client.patch_status({"metrics": metrics, "progress": {"step": 4, "totalSteps": 4, "percent": 100}})
    summary = {"exitReason": "Succeeded", "adapterPath": "/x/adapter", "metrics": metrics}
    kubelet.finish_job(ns, "sentiment-train", 0, json.dumps(summary))
    status = wait_phase(kube, ns, "sentiment", "Succeeded")["status"]
    assert status["metrics"] == metrics and "results" not in json.dumps(status), "the status holds no result files"

    code, out, err = _results(kubeconfig, None, target, capsys)
    assert code == 0, err
    written = [Path(line) for line in out.splitlines()]
    assert [path.name for path in written] == [MODEL_CARD_FILE, METRICS_FILE, LOSS_CURVES_FILE, HUMAN_EVAL_FILE]
    for name in (MODEL_CARD_FILE, METRICS_FILE, LOSS_CURVES_FILE):
        assert (target / name).read_bytes() == originals[name], name
    sheet = (target / HUMAN_EVAL_FILE).read_bytes()
    assert originals[HUMAN_EVAL_FILE].startswith(sheet), "the first whole rows, byte for byte"
    rows = list(csv.reader(io.StringIO(sheet.decode(), newline="")))
    assert rows[0] == list(COLUMNS) and rows[1:] == SHEET_ROWS[: len(rows) - 1]
    assert f"the first {len(rows) - 1} of {len(SHEET_ROWS)} rows" in err
    assert str(tmp_path / "output" / HUMAN_EVAL_FILE) in err, "where the whole sheet is"

    other = plane.write_admin_kubeconfig(tmp_path / "default.kubeconfig")
    code = main(["results", "ftj/nope", "-n", ns, "--kubeconfig", str(other)])
    assert code == 1 and f"no FineTuneJob 'nope' in namespace '{ns}'" in capsys.readouterr().err
