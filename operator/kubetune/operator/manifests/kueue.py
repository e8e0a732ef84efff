"""The trainer Job as Kueue expects it: queue label, pass-through labels and annotations, created suspended.

Kueue owns `spec.suspend` of a queued Job (it admits by unsuspending, preempts by suspending), so the operator
records the FineTuneJob's own `suspend` in an annotation and writes the Job only when that value changes
(reconcile/queueing.py).
"""

from __future__ import annotations

from typing import Any

from kubetune.api.base import API_GROUP
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.queueing import KUEUE_QUEUE_LABEL

ANNOTATION_SUSPEND = f"{API_GROUP}/suspend"
"""On a queued Job: the FineTuneJob's spec.suspend the operator last applied ("true"/"false")."""


def suspend_text(suspend: bool) -> str:
    return "true" if suspend else "false"


def with_queueing(job: dict[str, Any], spec: FineTuneJobSpec) -> dict[str, Any]:
    """`job` with the pass-through labels and annotations on the Job and its pod template and, with a queue, the
    queue label, the operator's suspend annotation and `suspend: true` (what Kueue's webhook would set: the Job
    waits for admission even where the webhook is not reached). The operator's own labels win over nothing: the
    API refuses pass-through keys the operator sets."""
    extra = spec.workload_metadata
    labels = dict(extra.labels) if extra is not None else {}
    annotations = dict(extra.annotations) if extra is not None else {}
    job_labels, job_annotations = dict(labels), dict(annotations)
    if spec.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
        job_annotations[ANNOTATION_SUSPEND] = suspend_text(spec.suspend)
    if not job_labels and not job_annotations:
        return job
    meta = dict(job["metadata"])
    meta["labels"] = {**job_labels, **meta.get("labels", {})}
    if job_annotations:
        meta["annotations"] = {**job_annotations, **meta.get("annotations", {})}
    job_spec = dict(job["spec"])
    template = dict(job_spec["template"])
    template_meta = dict(template.get("metadata") or {})
    template_meta["labels"] = {**labels, **template_meta.get("labels", {})}
    if annotations:
        template_meta["annotations"] = {**annotations, **template_meta.get("annotations", {})}
    template["metadata"] = template_meta
    job_spec["template"] = template
    if spec.queue_name:
        job_spec["suspend"] = True
    return {**job, "metadata": meta, "spec": job_spec}
