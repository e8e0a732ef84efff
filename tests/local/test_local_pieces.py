"""The local runner's parts: reading YAML, stand-in volumes, the progress line, serve.json resolution."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from kubetune.api import Progress, PvcPath
from kubetune.local.documents import DocumentError, load_bundle
from kubetune.local.progress import ProgressLine, read_progress, render
from kubetune.local.runner import format_metrics
from kubetune.local.serve import ServeFailed, local_serve_config
from kubetune.local.train import TrainResult
from kubetune.local.volumes import LocalVolumes, parse_binding
from kubetune.operator.manifests.trainer import output_location

REPO = Path(__file__).resolve().parents[2]

JOB = """
apiVersion: kubetune.dev/v1alpha1
kind: FineTuneJob
metadata: {name: tiny}
spec:
  baseModel: {pvc: {claimName: models, path: tiny}}
  dataset: {pvc: {claimName: data, path: facts.jsonl}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: kubetune.dev/v1alpha1
kind: ModelServe
metadata: {name: tiny}
spec:
  adapters: [{name: facts, fineTuneJobRef: {name: tiny}}]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_bundle_keeps_kubetune_documents_only(tmp_path: Path) -> None:
    bundle = load_bundle([_write(tmp_path, JOB)])
    assert [job.metadata.name for job in bundle.jobs] == ["tiny"]
    assert [serve.metadata.name for serve in bundle.serves] == ["tiny"]


def test_invalid_document_names_file_document_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, JOB.replace("claimName: data", "claimName: Data_Set"))
    with pytest.raises(DocumentError) as caught:
        load_bundle([path])
    assert str(path) in str(caught.value)
    assert "document 1" in str(caught.value)
    assert "spec.dataset.pvc.claimName" in str(caught.value)


def test_duplicate_job_names_are_refused(tmp_path: Path) -> None:
    first = JOB.split("---")[0]
    with pytest.raises(DocumentError, match="repeated: tiny"):
        load_bundle([_write(tmp_path, first + "---" + first)])


def test_every_example_file_loads() -> None:
    for path in sorted((REPO / "examples").glob("*.yaml")):
        assert load_bundle([path]).jobs or load_bundle([path]).serves


def test_volumes_bind_claims_and_configmaps(tmp_path: Path) -> None:
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "rows.jsonl").write_text("{}\n")
    volumes = LocalVolumes(tmp_path / "work")
    volumes.bind_claim("data", data)
    volumes.bind_configmap("rows", data)
    assert (volumes.pvc_root / "data" / "rows.jsonl").read_text() == "{}\n"
    assert (volumes.configmap_root / "rows" / "rows.jsonl").is_file()
    assert volumes.claim("fresh").is_dir()
    with pytest.raises(FileNotFoundError, match="--volume missing"):
        volumes.bind_claim("missing", tmp_path / "nope")
    with pytest.raises(FileExistsError):
        volumes.bind_claim("fresh", data)


@pytest.mark.parametrize("text", ["data", "=dir", "data="])
def test_binding_needs_name_and_folder(text: str) -> None:
    with pytest.raises(ValueError, match="NAME=DIR"):
        parse_binding(text, "--volume")


def test_progress_line_renders_and_reads(tmp_path: Path) -> None:
    progress = Progress(step=5, total_steps=20, percent=25, loss=1.23456, eta_seconds=75)
    assert render(progress) == "[######..................]  25% step 5/20 loss 1.235 eta 1m15s"
    path = tmp_path / "progress.json"
    assert read_progress(path) is None
    path.write_text('{"progress": {"step": 5, "totalSteps": 20, "percent": 25}}')
    assert read_progress(path) == Progress(step=5, total_steps=20, percent=25)
    stream = io.StringIO()
    line = ProgressLine(stream)
    line.show(progress)
    line.show(progress)
    assert stream.getvalue().count("step 5/20") == 1


def test_default_output_is_the_claim_the_operator_creates(tmp_path: Path) -> None:
    job = load_bundle([_write(tmp_path, JOB)]).jobs[0]
    assert output_location(job.metadata.name, job.spec) == PvcPath(claim_name="tiny-output", path="")


def test_serve_config_resolves_adapters_and_base(tmp_path: Path) -> None:
    bundle = load_bundle([_write(tmp_path, JOB)])
    adapter = PvcPath(claim_name="tiny-output", path="adapter")
    trained = {"tiny": TrainResult("tiny", adapter, tmp_path / "adapter")}
    config = local_serve_config(bundle.serves[0], bundle, trained)
    assert config.base_model == bundle.jobs[0].spec.base_model
    assert [(a.name, a.pvc, a.fine_tune_job) for a in config.adapters] == [("facts", adapter, "tiny")]
    with pytest.raises(ServeFailed, match="not in the given files"):
        local_serve_config(bundle.serves[0], bundle, {})


def test_metrics_summary_skips_missing_values() -> None:
    assert format_metrics({"trainLoss": 0.5, "evalLoss": None, "steps": 40}) == "train loss 0.5000, steps 40"
    assert format_metrics({}) == "no metrics reported"
    mixed = {"evalLoss": 1.5, "sources": [{"name": "qa", "evalLoss": 1.25, "trainRows": 30}, {"name": "sum"}]}
    assert format_metrics(mixed) == "eval loss 1.5000, eval loss per source: qa 1.2500 (30 training rows)"
    early = {"steps": 60, "publishedStep": 50, "stopReason": "EarlyStopped", "stopMessage": "eval loss did not improve"}
    assert format_metrics(early) == "steps 60, published step 50, stopped: eval loss did not improve"
