"""`kubetune.json`: what produced this adapter (spec hash, data fingerprint, base model, library versions)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from kubetune.api import FineTuneJobSpec

from .data import PreparedData
from .data_formats import ALPACA_TEMPLATE_NO_INPUT
from .reporting import now_rfc3339

LIBRARIES = ("kubetune", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes")


def spec_hash(spec: FineTuneJobSpec) -> str:
    """Stable hash of the full spec (defaults included); the local runner compares it too."""
    return spec.fingerprint()


def checkpoint_spec_hash(spec: FineTuneJobSpec) -> str:
    """Hash of what shapes the training run: the fingerprint (no placement; fields added later at their neutral
    default left out, so an operator upgrade keeps a running job's checkpoints) of the spec with `suspend` unset,
    the one field that may change while the run goes on (suspending and resuming must find its checkpoints)."""
    return spec.model_copy(update={"suspend": False}).fingerprint()


def run_identity(spec: FineTuneJobSpec, data: PreparedData) -> dict[str, str]:
    """What a checkpoint must have been written by to be resumed: this spec and this data."""
    return {"specHash": checkpoint_spec_hash(spec), "datasetFingerprint": data.fingerprint}


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_manifest(
    spec: FineTuneJobSpec,
    data: PreparedData,
    *,
    resolved_revision: str | None,
    precision: str,
    device_name: str,
    steps: int,
) -> dict[str, Any]:
    """The manifest; `format` and `promptTemplate` let a server build prompts exactly as in training
    (alpaca rows with an empty input use `promptTemplateWithoutInput` unless a custom template was given)."""
    custom = spec.dataset.prompt_template is not None or any(s.prompt_template for s in spec.dataset.mix or [])
    manifest = {
        "specHash": spec_hash(spec),
        "datasetFingerprint": data.fingerprint,
        "datasetSource": data.source,
        "format": data.format,
        "promptTemplate": data.prompt_template,
        "promptTemplateWithoutInput": ALPACA_TEMPLATE_NO_INPUT if data.format == "alpaca" and not custom else None,
        "skippedRows": data.skipped_rows,
        "trainRows": len(data.train),
        "evalRows": len(data.eval) if data.eval is not None else 0,
        "baseModel": spec.base_model.to_wire(),
        "baseModelRevision": resolved_revision,
        "method": spec.method,
        "precision": precision,
        "device": device_name,
        "steps": steps,
        "libraries": library_versions(),
        "completedAt": now_rfc3339(),
    }
    if data.mix is not None:
        manifest["mixSources"] = mix_sources_manifest(data)
    return manifest


def mix_sources_manifest(data: PreparedData) -> list[dict[str, Any]]:
    """Per mix source what a server needs to build its prompts (format, template, task prefix) and what it gave."""
    assert data.mix is not None
    return [
        {
            "name": source.name,
            "source": source.description,
            "format": source.format,
            "promptTemplate": source.prompt_template,
            "taskPrefix": source.task_prefix,
            "probability": data.mix.probabilities[source.name],
            "trainRows": data.mix.rows_per_source[source.name],
            "evalRows": len(data.eval_by_source[source.name]) if source.name in data.eval_by_source else 0,
        }
        for source in data.sources
    ]
