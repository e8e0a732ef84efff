"""Run a pod's container on this machine: the manifest's command, args and env, volumes as folders.

A claim mounted whole at the runtime contract's `/mnt/kubetune/pvc/<claimName>` is the folder
`claims_root/<claimName>` itself, shared by every pod (so absolute paths a trainer records, such as the
base model in adapter_config.json, are the same for the server later, as on a cluster). Any other
mountPath `/x/y` becomes `<root>/fs/x/y`, a link to the volume's folder: ConfigMaps and Secrets are
written out from the API, emptyDirs are fresh folders. Paths in args and env values are rewritten the
same way, and KUBETUNE_PVC_ROOT / KUBETUNE_CONFIGMAP_ROOT / KUBETUNE_TERMINATION_LOG point the images
at the mapped folders. Projected volumes are assembled as the kubelet does, including the `kube-api-access-*`
volume a real API server's ServiceAccount admission adds to pods (a real token from the TokenRequest API).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.api import runtime

from .server import CONFIGMAPS, SECRETS, SERVICEACCOUNTS, KubeError, KubeTestClient

LOG_TAIL_LINES = 80
# The volume the ServiceAccount admission plugin adds to a pod that automounts its token (token, CA, namespace).
SERVICE_ACCOUNT_VOLUME_PREFIX = "kube-api-access-"


@dataclass
class HostPod:
    """A container ready to run on the host."""

    argv: list[str]
    env: dict[str, str]
    fs: Path
    termination_log: Path
    fallback_to_logs: bool
    mounts: dict[str, Path] = field(default_factory=dict)

    def host_path(self, path: str) -> Path:
        """Where a path inside the container lives on the host."""
        return self.fs / path.lstrip("/")


@dataclass
class HostRun:
    returncode: int
    stdout: str
    stderr: str
    message: str


def _write_items(folder: Path, data: dict[str, bytes], items: list[dict[str, Any]] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    mapping = {item["key"]: item.get("path", item["key"]) for item in items} if items else {k: k for k in data}
    for key, relative in mapping.items():
        if key in data:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = target.with_name(f".{target.name}.tmp")
            staging.write_bytes(data[key])
            staging.replace(target)  # swapped in whole, as the kubelet's symlink swap: no reader sees half a file


def refresh_configmaps(client: KubeTestClient, namespace: str, pod: dict[str, Any], root: Path) -> None:
    """Write the pod's ConfigMap volumes again from the API, as the kubelet does some time after a change."""
    for volume in pod.get("spec", pod).get("volumes") or []:
        if "configMap" in volume:
            source = volume["configMap"]
            data = _configmap_data(client, namespace, source["name"])
            _write_items(root / "volumes" / volume["name"], data, source.get("items"))


def _configmap_data(client: KubeTestClient, namespace: str, name: str) -> dict[str, bytes]:
    cm = client.get(CONFIGMAPS, namespace, name)
    data = {key: value.encode() for key, value in (cm.get("data") or {}).items()}
    data.update({key: base64.b64decode(value) for key, value in (cm.get("binaryData") or {}).items()})
    return data


def _secret_data(client: KubeTestClient, namespace: str, name: str) -> dict[str, bytes]:
    secret = client.get(SECRETS, namespace, name)
    data = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
    data.update({key: value.encode() for key, value in (secret.get("stringData") or {}).items()})
    return data


def _field_value(namespace: str, pod_name: str, path: str, meta: dict[str, Any] | None = None) -> str:
    """A downward-API field (env fieldRef or a downwardAPI volume item): the pod's identity, and one of its labels
    or annotations (`metadata.annotations['key']`, as the Job controller's JOB_COMPLETION_INDEX of Indexed Jobs)."""
    known = {"metadata.namespace": namespace, "metadata.name": pod_name}
    for kind in ("labels", "annotations"):
        for key, value in ((meta or {}).get(kind) or {}).items():
            known[f"metadata.{kind}['{key}']"] = value
    if path not in known:
        raise ValueError(f"fieldRef {path!r}: only {sorted(known)} run on the host")
    return known[path]


def _service_account_token(client: KubeTestClient, namespace: str, account: str, source: dict[str, Any]) -> bytes:
    """A real token of the pod's ServiceAccount from the TokenRequest API, as the kubelet requests one."""
    spec: dict[str, Any] = {"expirationSeconds": int(source.get("expirationSeconds", 3600))}
    if source.get("audience"):
        spec["audiences"] = [source["audience"]]
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    return client.create_subresource(SERVICEACCOUNTS, namespace, account, "token", body)["status"]["token"].encode()


def _projected_source_data(
    client: KubeTestClient, namespace: str, source: dict[str, Any], lenient: bool
) -> dict[str, bytes] | None:
    """The data of a configMap or secret source; None when it is missing and may be left out.

    A missing object may be left out when the source is optional, and in the ServiceAccount volume: its CA
    ConfigMaps (kube-root-ca.crt; openshift-service-ca.crt on OpenShift-flavoured servers) are published by
    controllers a test control plane need not run, and nothing run on the host reads them."""
    kind, ref = ("configMap", source["configMap"]) if "configMap" in source else ("secret", source["secret"])
    try:
        if kind == "configMap":
            return _configmap_data(client, namespace, ref["name"])
        return _secret_data(client, namespace, ref["name"])
    except KubeError as error:
        if error.code == 404 and (lenient or ref.get("optional")):
            return None
        raise


def _projected_folder(
    client: KubeTestClient, namespace: str, volume: dict[str, Any], folder: Path, spec: dict[str, Any], pod_name: str
) -> None:
    """Assemble a projected volume from its sources into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    lenient = volume["name"].startswith(SERVICE_ACCOUNT_VOLUME_PREFIX)
    for source in volume["projected"].get("sources") or []:
        if "serviceAccountToken" in source:
            token_source = source["serviceAccountToken"]
            account = spec.get("serviceAccountName") or "default"
            token = _service_account_token(client, namespace, account, token_source)
            _write_items(folder, {"token": token}, [{"key": "token", "path": token_source["path"]}])
        elif "configMap" in source or "secret" in source:
            data = _projected_source_data(client, namespace, source, lenient)
            if data is not None:
                _write_items(folder, data, (source.get("configMap") or source.get("secret") or {}).get("items"))
        elif "downwardAPI" in source:
            items = source["downwardAPI"].get("items") or []
            data = {
                item["path"]: _field_value(namespace, pod_name, item["fieldRef"]["fieldPath"]).encode()
                for item in items
            }
            _write_items(folder, data, None)
        else:
            raise ValueError(f"volume {volume['name']!r}: projected source {sorted(source)} does not run on the host")


def _volume_folder(
    client: KubeTestClient,
    namespace: str,
    volume: dict[str, Any],
    root: Path,
    claims_root: Path,
    spec: dict[str, Any],
    pod_name: str,
) -> Path:
    name = volume["name"]
    if "persistentVolumeClaim" in volume:
        folder = claims_root / volume["persistentVolumeClaim"]["claimName"]
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder = root / "volumes" / name
    if "configMap" in volume:
        source = volume["configMap"]
        _write_items(folder, _configmap_data(client, namespace, source["name"]), source.get("items"))
    elif "secret" in volume:
        source = volume["secret"]
        _write_items(folder, _secret_data(client, namespace, source["secretName"]), source.get("items"))
    elif "emptyDir" in volume:
        folder.mkdir(parents=True, exist_ok=True)
    elif "projected" in volume:
        _projected_folder(client, namespace, volume, folder, spec, pod_name)
    else:
        raise ValueError(
            f"volume {name!r}: only persistentVolumeClaim, configMap, secret, emptyDir and projected run on the host"
        )
    return folder


def prepare(
    client: KubeTestClient,
    namespace: str,
    pod: dict[str, Any],
    root: Path,
    claims_root: Path | None = None,
    container: str | None = None,
    pod_name: str = "host-pod",
) -> HostPod:
    """Lay out the container's filesystem view under `root` and resolve its command and env."""
    spec = pod.get("spec", pod)
    claims_root = claims_root or root / "claims"
    chosen = next(c for c in spec["containers"] if container in (None, c["name"]))
    fs = root / "fs"
    folders = {
        v["name"]: _volume_folder(client, namespace, v, root, claims_root, spec, pod_name)
        for v in spec.get("volumes") or []
    }
    host = HostPod(
        argv=[],
        env={},
        fs=fs,
        termination_log=fs / runtime.TERMINATION_LOG.lstrip("/"),
        fallback_to_logs=chosen.get("terminationMessagePolicy") == "FallbackToLogsOnError",
    )
    claim_of = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes") or []
        if "persistentVolumeClaim" in v
    }
    targets: dict[str, Path] = {runtime.TERMINATION_LOG: host.termination_log}
    for mount in chosen.get("volumeMounts") or []:
        path = mount["mountPath"].rstrip("/")
        source = folders[mount["name"]] / mount.get("subPath", "")
        host.mounts[path] = source
        if (
            claim_of.get(mount["name"])
            and path == runtime.claim_mount_path(claim_of[mount["name"]], runtime.PVC_ROOT)
            and not mount.get("subPath")
        ):
            targets[path] = source  # the shared claim folder itself
            continue
        link = host.host_path(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(source, target_is_directory=source.is_dir())
        targets[path] = link
    host.termination_log.parent.mkdir(parents=True, exist_ok=True)

    def mapped(text: str) -> str:
        for prefix in sorted(targets, key=len, reverse=True):
            if text == prefix or text.startswith(prefix + "/"):
                return str(targets[prefix]) + text[len(prefix) :]
        return text

    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBETUNE_")}
    env["HOME"] = str(root / "home")
    (root / "home").mkdir(parents=True, exist_ok=True)
    for item in chosen.get("env") or []:
        env[item["name"]] = _env_value(client, namespace, item, pod_name, mapped, pod.get("metadata"))
    env[runtime.ENV_PVC_ROOT] = str(claims_root)
    env[runtime.ENV_CONFIGMAP_ROOT] = str(host.host_path(runtime.CONFIGMAP_ROOT))
    env[runtime.ENV_TERMINATION_LOG] = str(host.termination_log)
    argv = [mapped(part) for part in (chosen.get("command") or []) + (chosen.get("args") or [])]
    if not argv:
        raise ValueError(f"container {chosen['name']!r} sets no command: the image's entrypoint cannot run on the host")
    if argv[0] in {"python", "python3"}:
        argv[0] = sys.executable
    host.argv, host.env = argv, env
    return host


def _env_value(
    client: KubeTestClient, namespace: str, item: dict[str, Any], pod_name: str, mapped: Any, meta: Any = None
) -> str:
    if "value" in item or not item.get("valueFrom"):
        return mapped(item.get("value", ""))  # no value at all is the empty string, as the kubelet sets it
    source = item.get("valueFrom") or {}
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return _secret_data(client, namespace, ref["name"])[ref["key"]].decode()
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return _configmap_data(client, namespace, ref["name"])[ref["key"]].decode()
    if "fieldRef" in source:
        return _field_value(namespace, pod_name, source["fieldRef"]["fieldPath"], meta)
    raise ValueError(f"env {item['name']!r}: unsupported valueFrom {sorted(source)}")


def run(host: HostPod, timeout: float = 600) -> HostRun:
    """Run to completion; the termination message is what the kubelet would report."""
    done = subprocess.run(host.argv, env=host.env, cwd=host.fs, capture_output=True, text=True, timeout=timeout)
    message = host.termination_log.read_text() if host.termination_log.exists() else ""
    if not message.strip() and host.fallback_to_logs and done.returncode != 0:
        message = "\n".join((done.stdout + done.stderr).splitlines()[-LOG_TAIL_LINES:])
    return HostRun(done.returncode, done.stdout, done.stderr, message)


def start(host: HostPod, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start a long-running container (a server); output goes to `log`."""
    out = open(log or host.fs.parent / "container.log", "w")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(
        host.argv, env={**host.env, **(env or {})}, cwd=host.fs, stdout=out, stderr=subprocess.STDOUT
    )
