"""kubetune installed the way users install it, on a FRESH real control plane (no CRDs, no RBAC, nothing applied by
the test harness): `kubectl apply -k` of an overlay or `helm install`, then the operator run from the installed
Deployment's own pod template, as its ServiceAccount, and the README's user journey with the real kubectl.

What the operator's ServiceAccount really used in each install mode is recorded from the API server's audit log
into `request.config.stash[INSTALL_AUDIT]` (also the session fixture `install_audit`): mode -> set of
(verb, apiGroup, resource[/subresource]), for the RBAC-coverage test.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubetune.api.finetunejob import TrainingMetrics
from kubetune.api.runtime import ADAPTER_DIR
from kubetune.operator import naming

from tests.support.binaries import REPO_ROOT, helm_env, kubectl
from tests.support.binaries import helm as helm_binary
from tests.support.envtest.audit import AuditLog, Permission, service_account_user
from tests.support.envtest.controlplane import ControlPlane
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube import hostrun
from tests.support.kube.server import DEPLOYMENTS, JOBS, KubeTestClient

OPERATOR_NAMESPACE = "kubetune"
OPERATOR_DEPLOYMENT = "kubetune-operator"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
# The watches that show a running, un-paused operator (kopf watches nothing while peering keeps it paused).
OPERATOR_WATCHES = frozenset({"finetunejobs", "modelserves"})
README = REPO_ROOT / "README.md"
COMMAND_TIMEOUT = 90  # a kubectl or helm call on a loaded 2-core box
WAIT_TIMEOUT = "60s"  # what the README's `kubectl wait --timeout=6h` becomes here

INSTALL_AUDIT = pytest.StashKey[dict[str, set[Permission]]]()


def installed_permissions(config: pytest.Config) -> dict[str, set[Permission]]:
    """Install mode ("kustomize:cluster-wide", "kustomize:namespaced", "helm:cluster-wide") -> the (verb, apiGroup,
    resource[/subresource]) the operator's ServiceAccount used on that install (README journey included). Filled by
    tests/cluster/test_install.py as its tests run: empty for a mode whose test did not run (yet) in this session."""
    return config.stash.setdefault(INSTALL_AUDIT, {})


@pytest.fixture(scope="session")
def install_audit(request: pytest.FixtureRequest) -> dict[str, set[Permission]]:
    """`installed_permissions` as a session fixture (the same dict)."""
    return installed_permissions(request.config)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CommandFailed(AssertionError):
    """A user-facing command (kubectl, helm) failed; the message carries what it printed."""


@dataclass
class InstallCluster:
    """A fresh control plane and the tools a user has: kubectl and helm with an admin kubeconfig."""

    plane: ControlPlane
    workdir: Path
    kubeconfig: Path
    admin: KubeTestClient
    audit: AuditLog = field(init=False)

    def __post_init__(self) -> None:
        self.audit = AuditLog(self.plane.audit_log)

    def _run(self, argv: list[str], env: dict[str, str] | None, check: bool) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=COMMAND_TIMEOUT, check=False
        )
        if check and done.returncode != 0:
            raise CommandFailed(
                f"`{shlex.join(argv[1:])}` exited with {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return done

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The real kubectl 1.35 as a cluster admin (or with another kubeconfig), from the repository root."""
        config = kubeconfig or self.kubeconfig
        return self._run([str(kubectl()), f"--kubeconfig={config}", *args], None, check)

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real helm as a cluster admin; its cache and config stay in the work folder."""
        env = {**helm_env(self.workdir / "helm"), "KUBECONFIG": str(self.kubeconfig)}
        return self._run([str(helm_binary()), *args], env, check=True)

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
        self.admin.create(("v1", "namespaces"), None, body)

    def used_permissions(self, user: str) -> set[Permission]:
        return self.audit.permissions(user)

    def refused(self, user: str) -> list[str]:
        return [f"{e.code} {e.verb} {e.uri}: {e.message}" for e in self.audit.refused(user)]


@contextmanager
def fresh_cluster(assets: Path, workdir: Path) -> Iterator[InstallCluster]:
    """A control plane of its own (~4 s): nothing installed, as a new cluster is before `kubectl apply`."""
    with ControlPlane(assets, workdir / "control-plane") as plane:
        admin = plane.client()
        try:
            yield InstallCluster(plane, workdir, plane.write_admin_kubeconfig(workdir / "admin.kubeconfig"), admin)
        finally:
            admin.close()


# ---- the operator, run as its installed pod would run ------------------------------------------------------
def _resolve_program(name: str) -> str:
    """The container's program on this host: the venv's console script (`kubetune`), else one on PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"the operator container runs {name!r}, which is not installed here")
    return found


class OperatorPod:
    """The installed operator Deployment's container, started on this host from the pod template the API server
    holds: its command and env, authenticated with a token of its ServiceAccount (what the pod's mounted
    in-cluster token is). Only the ports move to free local ones (several engineers share this machine)."""

    def __init__(
        self, cluster: InstallCluster, namespace: str = OPERATOR_NAMESPACE, pod_name: str = "operator"
    ) -> None:
        self.cluster, self.namespace, self.pod_name = cluster, namespace, pod_name
        self.process: subprocess.Popen | None = None
        self.root = cluster.workdir / ("operator-pod" if pod_name == "operator" else f"operator-pod-{pod_name}")
        self.log = self.root / "operator.log"
        self.user = ""
        self.env: dict[str, str] = {}

    def template(self) -> dict[str, Any]:
        deployment = self.cluster.admin.get(DEPLOYMENTS, self.namespace, OPERATOR_DEPLOYMENT)
        return deployment["spec"]["template"]

    def start(self, timeout: float = 45, watching: bool = True) -> OperatorPod:
        """Start it and wait until it is live (its liveness endpoint answers) and, when `watching`, watching (not
        paused; a leader-election follower only answers its liveness probe)."""
        template = self.template()
        account = template["spec"]["serviceAccountName"]
        self.user = service_account_user(self.namespace, account)
        token = self.cluster.plane.service_account_token(self.namespace, account)
        kubeconfig = self.cluster.plane.write_kubeconfig(self.root / "token.kubeconfig", {"token": token})
        host = hostrun.prepare(self.cluster.admin, self.namespace, template, self.root / "pod", pod_name=self.pod_name)
        host.argv[0] = _resolve_program(host.argv[0])
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        overrides = {
            "KUBECONFIG": str(kubeconfig),
            "KUBETUNE_LIVENESS_ENDPOINT": liveness,
            "KUBETUNE_METRICS_PORT": str(free_port()),
        }
        self.env = {**host.env, **overrides}
        offset = self.cluster.audit.offset()
        self.process = hostrun.start(host, overrides, self.log)
        self._wait_ready(liveness, offset, timeout, OPERATOR_WATCHES if watching else set())
        return self

    def _wait_ready(self, liveness: str, offset: int, timeout: float, watches: set[str]) -> None:
        deadline = time.monotonic() + timeout
        live, watched = False, set()
        while not (live and watched >= watches):
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the operator exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the operator is not ready after {timeout} s (live: {live}, watching {sorted(watched)}):\n"
                    + self.log_tail()
                )
            live = live or _answers(liveness)
            events = self.cluster.audit.events(offset, self.user)
            watched = {e.resource for e in events if e.verb == "watch" and e.code < 400}
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as a node that dies: nothing is released (a Lease stays held until it expires)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# ---- the README's user journey ---------------------------------------------------------------------------
def readme_journey(readme: Path = README) -> list[list[str]]:
    """The kubectl commands of README.md's "The user journey" block, as argument lists (kubectl first).

    A `-w` (watch) is dropped, since it never ends, and `--timeout` of `kubectl wait` becomes WAIT_TIMEOUT: the
    commands are otherwise run exactly as written, in a namespace that is the kubeconfig's current one."""
    text = readme.read_text()
    section = text.split("## The user journey", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] != "kubectl":
            raise AssertionError(f"the README's journey has a command the test cannot run: {line!r}")
        argv = [arg for arg in argv if arg not in ("-w", "--watch")]
        argv = [f"--timeout={WAIT_TIMEOUT}" if arg.startswith("--timeout=") else arg for arg in argv]
        commands.append(argv)
    return commands


def trainer_summary(job: dict[str, Any]) -> str:
    """A termination message like the trainer's on success (kubetune_trainer.flow._summary)."""
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    output = args[args.index("--output") + 1]  # the trainer's output folder, as the operator rendered it
    metrics = TrainingMetrics(train_loss=0.42, eval_loss=0.51, steps=12, train_tokens=4096, wall_seconds=61.5)
    summary = {
        "exitReason": "Succeeded",
        "adapterPath": f"{output}/{ADAPTER_DIR}",
        "metrics": metrics.to_wire(),
        "skippedRows": 0,
    }
    return json.dumps(summary, separators=(",", ":"), sort_keys=True)


class ClusterNodes:
    """What the nodes of a real cluster do on their own while the user types: run the trainer pod to success,
    then run the server pods until the Deployment is available. In a thread, so the user's commands (kubectl
    wait) block on the cluster as they would; errors are re-raised by `join`."""

    def __init__(self, kubelet: FakeKubelet, namespace: str, ftj: str, msv: str) -> None:
        self.kubelet, self.namespace, self.ftj, self.msv = kubelet, namespace, ftj, msv
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="cluster-nodes", daemon=True)

    def start(self) -> ClusterNodes:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            client, job_name = self.kubelet.client, naming.job_name(self.ftj)
            job = client.wait_for(JOBS, self.namespace, job_name, _exists, timeout=30, what="to be created")
            assert job is not None
            self.kubelet.start_job(self.namespace, job_name)
            self.kubelet.finish_job(self.namespace, job_name, 0, trainer_summary(job))
            server = naming.server_name(self.msv)
            client.wait_for(DEPLOYMENTS, self.namespace, server, _exists, timeout=30, what="to be created")
            self.kubelet.deployment_ready(self.namespace, server)
        except BaseException as error:  # surfaced by join()
            self.error = error

    def join(self, timeout: float = 60) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("the fake nodes did not finish their part in time")
        if self.error is not None:
            raise self.error


def _exists(obj: dict[str, Any] | None) -> bool:
    return obj is not None


@dataclass
class JourneyResult:
    outputs: dict[str, str]
    """stdout of each README command, by its command line."""

    ftj_row: str
    """`kubectl get ftj`'s line for the FineTuneJob."""


def run_readme_journey(cluster: InstallCluster, kubelet: FakeKubelet, namespace: str) -> JourneyResult:
    """The README's commands, one after the other, as a user whose current namespace is `namespace`; the nodes
    play the trainer and server pods meanwhile. Every command must succeed."""
    kubeconfig = cluster.plane.write_admin_kubeconfig(cluster.workdir / f"user-{namespace}.kubeconfig", namespace)
    nodes: ClusterNodes | None = None
    outputs: dict[str, str] = {}
    for argv in readme_journey():
        try:
            done = cluster.kubectl(*argv[1:], kubeconfig=kubeconfig)
        except CommandFailed as failed:
            raise CommandFailed(f"{failed}\n{_diagnosis(cluster, kubeconfig, nodes)}") from None
        outputs[shlex.join(argv)] = done.stdout
        if argv[1:3] == ["apply", "-f"] and nodes is None:
            nodes = ClusterNodes(kubelet, namespace, "sentiment-ko", "sentiment-ko").start()
    if nodes is None:
        raise AssertionError("the README's journey applies nothing (`kubectl apply -f`)")
    nodes.join()
    table = cluster.kubectl("get", "ftj", kubeconfig=kubeconfig).stdout
    row = next((line for line in table.splitlines() if line.startswith("sentiment-ko ")), "")
    return JourneyResult(outputs, row)


def _diagnosis(cluster: InstallCluster, kubeconfig: Path, nodes: ClusterNodes | None) -> str:
    """What a failed journey step needs explained: the nodes' own failure, the objects' status and events."""
    parts = []
    if nodes is not None and nodes.error is not None:
        parts.append(f"the fake nodes failed: {nodes.error!r}")
    for args in (("get", "ftj,msv,jobs,pods,deployments", "-o", "wide"), ("get", "events", "--sort-by=.lastTimestamp")):
        parts.append(cluster.kubectl(*args, kubeconfig=kubeconfig, check=False).stdout)
    parts.append(
        cluster.kubectl(
            "get", "ftj,msv", "-o", "jsonpath={.items[*].status}", kubeconfig=kubeconfig, check=False
        ).stdout
    )
    return "\n".join(parts)


def check_mode(mode: str, cluster: InstallCluster, user: str, registry: dict[str, set[Permission]]) -> None:
    """No request of the operator was refused; record what it used for the RBAC-coverage test."""
    refused = cluster.refused(user)
    assert not refused, f"{mode}: the API server refused the operator:\n" + "\n".join(refused)
    registry[mode] = cluster.used_permissions(user)
