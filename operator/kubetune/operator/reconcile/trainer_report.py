"""What the trainer reported in its own ConfigMap: progress and final metrics, validated before the operator copies
them into the FineTuneJob's status. Anything else written there (a forged phase, output or condition) is ignored;
an unreadable value is dropped with a log line, never trusted and never fatal."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from kubetune.api.finetunejob import Progress, TrainingMetrics
from kubetune.api.runtime import REPORT_METRICS_KEY, REPORT_PROGRESS_KEY

log = logging.getLogger(__name__)
MAX_VALUE_BYTES = 16 * 1024  # a progress or metrics object is a few hundred bytes


@dataclass(frozen=True)
class ReportedProgress:
    progress: Progress | None = None
    metrics: TrainingMetrics | None = None


def _parse(configmap: dict[str, Any], key: str, model: type[BaseModel]) -> Any:
    text = (configmap.get("data") or {}).get(key)
    if not text:
        return None
    where = f"{(configmap.get('metadata') or {}).get('name')}/{key}"
    if len(text) > MAX_VALUE_BYTES:
        log.warning("ignoring trainer report %s: %d bytes (at most %d)", where, len(text), MAX_VALUE_BYTES)
        return None
    try:
        return model.model_validate(json.loads(text))
    except (ValueError, ValidationError) as error:
        log.warning("ignoring trainer report %s: %s", where, str(error).splitlines()[0])
        return None


def without_results(configmap: dict[str, Any]) -> dict[str, Any]:
    """The report ConfigMap as the operator keeps it in its watch cache: progress and metrics only. The result files
    the trainer copies there at the end (up to RESULTS_BUDGET_BYTES each, for `kubetune results`) are for users;
    holding them for every finished job would grow the operator's memory with each one."""
    data = configmap.get("data") or {}
    kept = {key: value for key, value in data.items() if key in (REPORT_PROGRESS_KEY, REPORT_METRICS_KEY)}
    trimmed = {key: value for key, value in configmap.items() if key not in ("data", "binaryData")}
    return {**trimmed, "data": kept} if "data" in configmap or "binaryData" in configmap else trimmed


def parse_report(configmap: dict[str, Any] | None) -> ReportedProgress | None:
    """The validated progress and metrics of a report ConfigMap (None when there is none)."""
    if configmap is None:
        return None
    return ReportedProgress(
        _parse(configmap, REPORT_PROGRESS_KEY, Progress), _parse(configmap, REPORT_METRICS_KEY, TrainingMetrics)
    )
