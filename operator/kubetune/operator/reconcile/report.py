"""The trainer's termination message: a JSON summary or a log tail.

The trainer writes `{"exitReason", "exitCode", "message"}` on failure and `{"exitReason": "Succeeded",
"adapterPath", "metrics", ...}` on success (kubetune_trainer.termination); `reason`/`adapter` are accepted too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubetune.api.finetunejob import TrainingMetrics
from kubetune.api.runtime import EXIT_REASONS, TrainerExit


@dataclass(frozen=True)
class TrainerReport:
    """What the trainer said when its container ended."""

    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    metrics: TrainingMetrics | None = None
    adapter: str | None = None

    @property
    def exit_reason(self) -> str | None:
        """The trainer's own reason, else the one its exit code stands for."""
        if self.reason:
            return self.reason
        if self.exit_code is not None and self.exit_code in set(TrainerExit):
            return EXIT_REASONS.get(TrainerExit(self.exit_code))
        return None


def parse_termination_message(text: str | None, exit_code: int | None = None) -> TrainerReport:
    """Parse leniently: a JSON object is the trainer's summary; anything else is a log tail (FallbackToLogsOnError)."""
    text = (text or "").strip()
    data: Any = None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
    if not isinstance(data, dict):
        return TrainerReport(exit_code=exit_code, message=text[-4000:] or None)
    metrics = None
    if isinstance(data.get("metrics"), dict):
        try:
            metrics = TrainingMetrics.model_validate(data["metrics"])
        except ValidationError:
            metrics = None
    adapter = data.get("adapterPath") or data.get("adapter")
    reason = data.get("exitReason") or data.get("reason")
    return TrainerReport(
        exit_code=exit_code,
        reason=str(reason) if reason else None,
        message=str(data["message"]) if data.get("message") else None,
        metrics=metrics,
        adapter=str(adapter) if adapter else None,
    )


def report_from_pods(pods: list[dict[str, Any]], container: str) -> TrainerReport | None:
    """The report of the most recently finished trainer container among a Job's pods that said something: in a
    multi-node run only node 0's main process writes the summary, and the other pods may end after it."""
    finished = []
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if status.get("name") == container and terminated:
                said = bool((terminated.get("message") or "").strip())
                finished.append(((said, terminated.get("finishedAt") or ""), terminated))
    if not finished:
        return None
    _, terminated = max(finished, key=lambda item: item[0])
    return parse_termination_message(terminated.get("message"), terminated.get("exitCode"))
