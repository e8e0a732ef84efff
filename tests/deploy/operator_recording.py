"""What the operator actually asks of the API server, recorded at the mock API server (tests/support/kube).

Two sources, both real operator runs:
- `scenario_permissions()`: the operator's scenario suite (the tests in tests/operator that run the operator,
  chosen by tests/deploy/scenario_selection.py), run in a subprocess with the harness' KUBETUNE_API_REQUESTS_FILE,
  which collects every (verb, apiGroup, resource) the operator sent. They run kopf standalone and cluster-wide.
- `peering_run()`: the operator as installed: mandatory kopf peering (`KUBETUNE_PEERING`) with the shipped
  peering object, cluster-wide or in one watched namespace. It records kopf's framework calls (peering,
  namespace-scoped watches) and the per-job Role the operator creates, whose rules the operator must hold
  itself (RBAC forbids granting what one does not have, unless one has `escalate`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.support.binaries import REPO_ROOT

from .rbac import Permission, rule_permissions

OPERATOR_TESTS = REPO_ROOT / "tests" / "operator"
PEERING_CRDS = REPO_ROOT / "deploy" / "kustomize" / "base" / "kopf-peering-crds.yaml"
PEERING_NAME = "kubetune"
RECORDING_ENV = "KUBETUNE_RBAC_RECORDING"
"""Path of a recording the operator suite already wrote in this CI job (KUBETUNE_API_REQUESTS_FILE): reused
instead of running the suite again."""


class RecordingError(AssertionError):
    """The operator could not be recorded (its scenarios failed or it never acted)."""


def _read_permissions(path: Path) -> set[Permission]:
    return {(row["verb"], row["apiGroup"], row["resource"]) for row in json.loads(path.read_text())}


def scenario_permissions() -> set[Permission]:
    """Union of the operator's requests over the whole operator scenario suite."""
    reused = os.environ.get(RECORDING_ENV)
    if reused:
        return _read_permissions(Path(reused))
    from tests.support.kube.recorder import REQUESTS_FILE_ENV

    failures = []
    for _attempt in range(2):  # one retry: a scenario that times out on a loaded machine says nothing about RBAC
        with tempfile.TemporaryDirectory() as scratch:
            target = Path(scratch) / "requests.json"
            command = [sys.executable, "-m", "pytest", str(OPERATOR_TESTS), "-q", "-p", "no:cacheprovider", "-x"]
            command += ["-p", "tests.deploy.scenario_selection"]
            env = {**os.environ, REQUESTS_FILE_ENV: str(target)}
            result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
            if result.returncode == 0 and target.is_file():
                return _read_permissions(target)
            failures.append(result.stdout[-3000:] or f"{REQUESTS_FILE_ENV} was not written")
    raise RecordingError("the operator scenarios failed twice, so their API calls are unknown:\n" + failures[-1])


def _register_peering_kinds(cluster: Any) -> None:
    """Serve kopf's peering CRDs (the ones deploy/ installs) from the mock, as the API server would."""
    from tests.support.kube.resources import crd_kind

    for crd in yaml.safe_load_all(PEERING_CRDS.read_text()):
        key, info, kind = crd_kind(crd)
        cluster.api.resources[key] = info
        cluster.api.state.kinds[kind.key] = kind


def _finetunejob(namespace: str) -> dict[str, Any]:
    from tests.operator.helpers import finetunejob

    body = finetunejob("rbac-probe")
    body["metadata"]["namespace"] = namespace
    return body


def peering_run(namespace: str | None) -> tuple[set[Permission], set[Permission]]:
    """Run the operator with mandatory peering, cluster-wide (namespace None) or watching one namespace, until it
    created the trainer Job of one FineTuneJob. Returns (permissions it used, rules of the Role it created)."""
    from kubetune.operator.runner import OperatorThread
    from kubetune.operator.settings import OperatorSettings

    from tests.support.kube.server import FTJ, JOBS, ROLES, MockCluster

    work_namespace = namespace or "default"
    with MockCluster() as cluster, tempfile.TemporaryDirectory() as scratch:
        _register_peering_kinds(cluster)
        kube = cluster.client()
        try:
            if namespace:
                kube.create(("v1", "namespaces"), None, {"metadata": {"name": namespace}})
                peering = ("kopf.dev/v1", "kopfpeerings"), "KopfPeering"
            else:
                peering = ("kopf.dev/v1", "clusterkopfpeerings"), "ClusterKopfPeering"
            body = {"apiVersion": "kopf.dev/v1", "kind": peering[1], "metadata": {"name": PEERING_NAME}}
            kube.create(peering[0], namespace, body)
            settings = OperatorSettings(
                kubeconfig=str(cluster.write_kubeconfig(Path(scratch) / "kubeconfig")),
                metrics_port=0,
                liveness_endpoint="",
                trainer_image="kubetune/trainer:rbac",
                server_image="kubetune/server:rbac",
                peering=PEERING_NAME,
                watch_namespaces=(namespace,) if namespace else (),
            )
            operator = OperatorThread(settings).start()
            try:
                kube.create(FTJ, work_namespace, _finetunejob(work_namespace))
                # A paused operator (peering object missing or unreadable) never gets this far.
                kube.wait_for(JOBS, work_namespace, "rbac-probe-train", lambda obj: obj is not None, timeout=30)
                created_roles = kube.list(ROLES, work_namespace)
            finally:
                operator.stop()
        finally:
            kube.close()
        used = cluster.recorder.permissions()
    if not created_roles:
        raise RecordingError("the operator created no per-job Role; the delegation check has nothing to check")
    delegated = set().union(*(rule_permissions(role.get("rules") or []) for role in created_roles))
    return used, delegated
