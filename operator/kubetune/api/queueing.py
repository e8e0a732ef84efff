"""Queueing and placement metadata of a trainer Job: the Kueue queue and the labels/annotations passed through.

Kueue (kueue.sigs.k8s.io) manages a batch/v1 Job that carries the label `kueue.x-k8s.io/queue-name`: its webhook
creates the Job suspended, it admits the Job by unsuspending it (adding the node selectors and tolerations of the
admitted ResourceFlavor to the pod template), and it preempts by suspending it again. Team labels (cost centre),
Kueue's `kueue.x-k8s.io/priority-class` (a WorkloadPriorityClass) and annotations reach the Job and its pods here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from .base import _LABEL_KEYS_CEL, ApiModel, LabelValue, _label_keys

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
"""The label Kueue reads the LocalQueue of a Job from (set from spec.queueName, never from labels)."""

# Keys the operator owns on its children: its selectors and recommended labels, the Job controller's labels and
# Kueue's queue label (spec.queueName). A user label under them could hide a Job from the operator's own watches.
RESERVED_PREFIXES = ("kubetune.dev/", "app.kubernetes.io/", "batch.kubernetes.io/")
RESERVED_KEYS = frozenset({KUEUE_QUEUE_LABEL, "job-name", "controller-uid"})

_RESERVED_CEL = {
    "rule": "self.all(k, !k.startsWith('kubetune.dev/') && !k.startsWith('app.kubernetes.io/') && "
    "!k.startsWith('batch.kubernetes.io/') && !(k in ['kueue.x-k8s.io/queue-name', 'job-name', 'controller-uid']))",
    "message": "keys under kubetune.dev/, app.kubernetes.io/ and batch.kubernetes.io/, job-name, controller-uid and "
    "kueue.x-k8s.io/queue-name are set by the operator (use spec.queueName for the queue)",
}


def _unreserved(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if key in RESERVED_KEYS or key.startswith(RESERVED_PREFIXES):
            hint = " (use spec.queueName)" if key == KUEUE_QUEUE_LABEL else ""
            raise ValueError(f"key {key!r} is set by the operator and cannot be given here{hint}")
    return value


PassThroughLabels = Annotated[
    dict[str, LabelValue],
    Field(max_length=32, json_schema_extra={"x-kubernetes-validations": [_LABEL_KEYS_CEL, _RESERVED_CEL]}),
    AfterValidator(_label_keys),
    AfterValidator(_unreserved),
]
PassThroughAnnotations = Annotated[
    dict[str, Annotated[str, Field(max_length=4096)]],
    Field(max_length=32, json_schema_extra={"x-kubernetes-validations": [_LABEL_KEYS_CEL, _RESERVED_CEL]}),
    AfterValidator(_label_keys),
    AfterValidator(_unreserved),
]


class WorkloadMetadata(ApiModel):
    """Labels and annotations added to the trainer Job and to its pod template (and so to every trainer pod)."""

    labels: PassThroughLabels = Field(default_factory=dict)
    """E.g. a cost centre (`team: nlp`) or Kueue's `kueue.x-k8s.io/priority-class: high` (a WorkloadPriorityClass).
    Keys the operator sets itself (kubetune.dev/, app.kubernetes.io/, batch.kubernetes.io/, the queue) are refused."""

    annotations: PassThroughAnnotations = Field(default_factory=dict)
    """Annotations for the Job and its pods (e.g. for a cost exporter or a policy engine)."""

    @model_validator(mode="after")
    def _size(self) -> WorkloadMetadata:
        total = sum(len(key) + len(value) for key, value in self.annotations.items())
        if total > 64 * 1024:
            raise ValueError(f"workloadMetadata.annotations hold {total} bytes; at most 65536 are allowed")
        return self
