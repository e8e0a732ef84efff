"""Deterministic names and labels of the children, so a restarted operator finds what it created."""

from __future__ import annotations

import hashlib
import re

from kubetune.api.base import API_GROUP

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_FINETUNEJOB = f"{API_GROUP}/finetunejob"
LABEL_MODELSERVE = f"{API_GROUP}/modelserve"
MANAGED_BY = "kubetune-operator"
FINALIZER = f"{API_GROUP}/finalizer"
ANNOTATION_CONFIG_HASH = f"{API_GROUP}/server-config-hash"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

TRAINER_CONTAINER = "trainer"
SERVER_CONTAINER = "server"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _digest(text: str, size: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def fit(name: str, limit: int = 63) -> str:
    """`name` if short enough, else a truncated prefix plus a hash of the whole (still unique and stable)."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9].rstrip('-.')}-{_digest(name)}"


def label_value(value: str) -> str:
    """Label values are at most 63 characters."""
    return fit(value, 63)


def job_name(ftj: str) -> str:
    return fit(f"{ftj}-train")


def spec_configmap(ftj: str) -> str:
    return fit(f"{ftj}-spec", 253)


def report_configmap(ftj: str) -> str:
    """The ConfigMap the trainer reports progress and final metrics to (the only object its token may write)."""
    return fit(f"{ftj}-report", 253)


def output_claim(ftj: str) -> str:
    return fit(f"{ftj}-output", 253)


def trainer_account(ftj: str) -> str:
    """ServiceAccount, Role and RoleBinding of one trainer share this name."""
    return fit(f"{ftj}-trainer", 253)


def rendezvous_service(ftj: str) -> str:
    """Headless Service of a multi-node run's pods: a DNS-1035 label, as Service names (and pod subdomains) must be."""
    base = ftj if _DNS1035.match(ftj) else f"ftj-{ftj}".replace(".", "-")
    return fit(f"{base}-nodes")


def server_name(msv: str) -> str:
    """Deployment and Service name: a DNS-1035 label, as Service names must be."""
    name = msv if _DNS1035.match(msv) and len(msv) <= 63 else f"msv-{msv}".replace(".", "-")
    return fit(name)


def server_configmap(msv: str) -> str:
    return fit(f"{msv}-config", 253)


def volume_name(prefix: str, source: str) -> str:
    """A pod volume name (DNS-1123 label) for a claim or ConfigMap, stable across renders."""
    return fit(f"{prefix}-{source}".replace(".", "-"))
