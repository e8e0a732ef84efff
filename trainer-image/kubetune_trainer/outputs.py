"""The finished adapter folder, written so that nothing half-done ever looks complete.

Everything (weights, tokenizer, README.md, metrics.json, kubetune.json) goes into a temporary sibling
folder first, which is renamed to `adapter/` in one step: a reader sees the old adapter, no adapter, or the
complete new one. kubetune.json is written last inside the temporary folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from kubetune.api.runtime import ADAPTER_DIR, ENV_ADAPTER_STORE, MANIFEST_FILE, METRICS_FILE, MODEL_CARD_FILE

from .reporting import write_json_atomically

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
README_FILE = MODEL_CARD_FILE


def adapter_dir(output_dir: Path) -> Path:
    return output_dir / ADAPTER_DIR


def partial_adapter_dir(output_dir: Path) -> Path:
    return output_dir / f".{ADAPTER_DIR}{PARTIAL_SUFFIX}"


def clear_partial_adapter(output_dir: Path) -> None:
    """Remove leftovers of a run killed while writing its adapter."""
    shutil.rmtree(partial_adapter_dir(output_dir), ignore_errors=True)


def write_adapter_extras(folder: Path, readme: str, metrics: dict[str, Any], manifest: dict[str, Any]) -> None:
    (folder / README_FILE).write_text(readme, encoding="utf-8")
    write_json_atomically(folder / METRICS_FILE, metrics)
    write_json_atomically(folder / MANIFEST_FILE, manifest)


def publish_adapter(output_dir: Path) -> Path:
    """Rename the temporary folder to `adapter/`, replacing an older adapter only once the new one is whole."""
    partial, final = partial_adapter_dir(output_dir), adapter_dir(output_dir)
    weights_config = partial / "adapter_config.json", partial / "config.json"  # an adapter, or a full model
    if not any(path.is_file() for path in weights_config) or not (partial / MANIFEST_FILE).is_file():
        raise RuntimeError(
            f"refusing to publish {partial}: adapter_config.json (or config.json) or {MANIFEST_FILE} is missing"
        )
    retired = output_dir / f".{ADAPTER_DIR}.old"
    shutil.rmtree(retired, ignore_errors=True)
    if final.exists():
        final.rename(retired)
    partial.rename(final)
    shutil.rmtree(retired, ignore_errors=True)
    log.info("adapter written to %s", final)
    return final


def finished_manifest(output_dir: Path) -> dict[str, Any] | None:
    """The manifest of an adapter already published in this folder, if any."""
    path = adapter_dir(output_dir) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def publish_to_store(adapter: Path) -> Path | None:
    """Copy the finished adapter to the namespace's adapter store (KUBETUNE_ADAPTER_STORE, when the operator set
    one), whole or not at all: servers load it from there, independent of this run's output volume and of the
    FineTuneJob's lifetime. A copy of this very adapter already there (a retried pod) is kept."""
    target = os.environ.get(ENV_ADAPTER_STORE)
    if not target:
        return None
    store = Path(target)
    if (store / MANIFEST_FILE).is_file() and (store / MANIFEST_FILE).read_bytes() == (
        adapter / MANIFEST_FILE
    ).read_bytes():
        return store
    partial = store.with_name(f".{store.name}{PARTIAL_SUFFIX}")
    shutil.rmtree(partial, ignore_errors=True)
    store.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(adapter, partial)
    shutil.rmtree(store, ignore_errors=True)
    partial.rename(store)
    log.info("adapter published to the adapter store at %s", store)
    return store
