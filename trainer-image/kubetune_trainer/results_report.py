"""The finished run's result files as a patch of the trainer's report ConfigMap, so `kubetune results` can fetch
them with the user's own kubeconfig instead of exec'ing into a pod or mounting the output volume.

A ConfigMap holds at most 1 MiB, so the files share RESULTS_BUDGET_BYTES: the model card, metrics.json and the
loss-curve picture first, then as many whole rows of the human-evaluation sheet as still fit. The index
(`results`) says which files are there, how many sheet rows were left out, and where the whole files lie on the
output volume. Keys of files this run did not write are removed (a merge patch with null), so a retried pod never
leaves an older run's file behind.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.api.runtime import (
    ADAPTER_DIR,
    HUMAN_EVAL_FILE,
    LOSS_CURVES_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    REPORT_RESULTS_KEY,
    REPORT_RESULTS_PREFIX,
    RESULTS_BUDGET_BYTES,
    pvc_root,
)

BINARY_FILES = frozenset({LOSS_CURVES_FILE})
RESULT_FILES = (MODEL_CARD_FILE, METRICS_FILE, LOSS_CURVES_FILE, HUMAN_EVAL_FILE)
"""In the order they claim the budget; the sheet last, because only it can be cut."""


@dataclass(frozen=True)
class SheetCut:
    content: bytes
    rows: int
    rows_included: int


def result_files(output_dir: Path) -> dict[str, Path]:
    """Where a finished run's result files lie: the card, metrics and picture in `adapter/`, the sheet beside it."""
    adapter = output_dir / ADAPTER_DIR
    files = {name: adapter / name for name in (MODEL_CARD_FILE, METRICS_FILE, LOSS_CURVES_FILE)}
    return {**files, HUMAN_EVAL_FILE: output_dir / HUMAN_EVAL_FILE}


def result_key(file_name: str) -> str:
    return REPORT_RESULTS_PREFIX + file_name


def cut_sheet(content: bytes, budget: int) -> SheetCut:
    """The header and as many whole records as fit in `budget` bytes (a record may span lines: answers contain
    newlines), written back with the csv module's default dialect, the one the sheet was written with."""
    records = list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))
    header, rows = records[:1], records[1:]
    if len(content) <= budget:
        return SheetCut(content, len(rows), len(rows))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerows(header)
    size, included = len(text.getvalue().encode()), 0
    for row in rows:
        line = io.StringIO(newline="")
        csv.writer(line).writerow(row)
        encoded = line.getvalue().encode()
        if size + len(encoded) > budget:
            break
        text.write(line.getvalue())
        size, included = size + len(encoded), included + 1
    return SheetCut(text.getvalue().encode(), len(rows), included)


def volume_path(path: Path) -> str:
    """`<claim>/<path>` of a file on a mounted claim (what a user can find with the claim), else the pod path."""
    try:
        return str(path.relative_to(pvc_root()))
    except ValueError:
        return str(path)


def results_patch(files: dict[str, Path], budget: int = RESULTS_BUDGET_BYTES) -> dict[str, Any]:
    """The merge patch of the report ConfigMap that carries `files` (file name -> path; missing ones are skipped)."""
    data: dict[str, str | None] = {}
    binary: dict[str, str | None] = {}
    index: dict[str, dict[str, Any]] = {}
    left = budget
    for name in RESULT_FILES:
        path = files.get(name)
        target = binary if name in BINARY_FILES else data
        target[result_key(name)] = None
        if path is None or not path.is_file():
            continue
        content = path.read_bytes()
        entry: dict[str, Any] = {"key": result_key(name), "volumePath": volume_path(path)}
        if name == HUMAN_EVAL_FILE:
            cut = cut_sheet(content, left)
            entry.update(rows=cut.rows, rowsIncluded=cut.rows_included)
            content = cut.content
        if len(content) > left:  # only on the volume (a sheet whose header alone does not fit, too)
            index[name] = {"volumePath": entry["volumePath"], "leftOutBytes": len(content)}
            continue
        left -= len(content)
        entry["bytes"] = len(content)
        target[result_key(name)] = base64.b64encode(content).decode() if name in BINARY_FILES else content.decode()
        index[name] = entry
    data[REPORT_RESULTS_KEY] = json.dumps({"files": index}, sort_keys=True)
    return {"data": data, "binaryData": binary}
