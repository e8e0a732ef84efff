"""The Kubernetes "restricted" Pod Security Standard, as a check on any workload manifest.

`restricted_violations(manifest)` returns one sentence per broken rule (empty when the pod would be admitted in a
namespace labelled `pod-security.kubernetes.io/enforce: restricted`). It accepts a Pod or any object with a pod
template (Deployment, Job, StatefulSet, DaemonSet, ReplicaSet, CronJob), so the operator Deployment and the
trainer Job / server Deployment the operator renders are all checked by the same code.

The rules follow https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted,
policy version "latest", Linux pods): host namespaces, privileged, capabilities, hostPath and other volume types,
host ports, AppArmor, SELinux, /proc mount, seccomp, sysctls, privilege escalation, non-root user.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
        "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip
RESTRICTED_ADDABLE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)  # fmt: skip
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
ALLOWED_APPARMOR = frozenset({"RuntimeDefault", "Localhost"})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def pod_template(manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod metadata, pod spec) of a Pod or of a workload's pod template."""
    kind = manifest.get("kind")
    if kind == "Pod":
        return manifest.get("metadata") or {}, manifest.get("spec") or {}
    spec = manifest.get("spec") or {}
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template")
    if not isinstance(template, dict):
        raise ValueError(f"{kind} {manifest.get('metadata', {}).get('name')!r} has no pod template to check")
    return template.get("metadata") or {}, template.get("spec") or {}


def _containers(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in CONTAINER_LISTS:
        for container in pod.get(field) or []:
            yield f"{field}[{container.get('name', '?')}]", container


def _effective(pod_context: dict[str, Any], container_context: dict[str, Any], field: str) -> Any:
    """A container's setting wins over the pod's."""
    value = container_context.get(field)
    return pod_context.get(field) if value is None else value


def _baseline(meta: dict[str, Any], pod: dict[str, Any]) -> Iterator[str]:
    pod_context = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            yield f"spec.{field} must be unset or false"
    if (pod_context.get("windowsOptions") or {}).get("hostProcess"):
        yield "spec.securityContext.windowsOptions.hostProcess must be unset or false"
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            yield f"volume {volume.get('name')!r} is a hostPath volume"
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"sysctl {sysctl.get('name')!r} is not in the safe set"
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and value != "runtime/default" and not value.startswith("localhost/"):
            yield f"annotation {key}={value!r} must be runtime/default or localhost/*"
    yield from _selinux("spec.securityContext", pod_context.get("seLinuxOptions"))
    yield from _apparmor("spec.securityContext", pod_context.get("appArmorProfile"))
    if (pod_context.get("seccompProfile") or {}).get("type") == "Unconfined":
        yield "spec.securityContext.seccompProfile.type must not be Unconfined"
    for where, container in _containers(pod):
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            yield f"{where}: privileged must be unset or false"
        added = set((context.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            yield f"{where}: capabilities {sorted(added - BASELINE_CAPABILITIES)} are beyond the baseline set"
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                yield f"{where}: hostPort {port['hostPort']} is not allowed"
        if context.get("procMount") not in (None, "Default"):
            yield f"{where}: procMount must be unset or Default"
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            yield f"{where}: windowsOptions.hostProcess must be unset or false"
        yield from _selinux(f"{where}.securityContext", context.get("seLinuxOptions"))
        yield from _apparmor(f"{where}.securityContext", context.get("appArmorProfile"))


def _selinux(where: str, options: dict[str, Any] | None) -> Iterator[str]:
    if not options:
        return
    if options.get("type", "") not in SELINUX_TYPES:
        yield f"{where}.seLinuxOptions.type {options['type']!r} is not allowed"
    for field in ("user", "role"):
        if options.get(field):
            yield f"{where}.seLinuxOptions.{field} must be unset"


def _apparmor(where: str, profile: dict[str, Any] | None) -> Iterator[str]:
    if profile and profile.get("type") not in ALLOWED_APPARMOR:
        yield f"{where}.appArmorProfile.type must be RuntimeDefault or Localhost (got {profile.get('type')!r})"


def _restricted(pod: dict[str, Any]) -> Iterator[str]:
    pod_context = pod.get("securityContext") or {}
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            allowed = ", ".join(sorted(RESTRICTED_VOLUME_TYPES))
            yield f"volume {volume.get('name')!r} of type {sorted(kinds)} is not allowed (only {allowed})"
    if pod_context.get("runAsUser") == 0:
        yield "spec.securityContext.runAsUser must not be 0"
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    for where, container in _containers(pod):
        context = container.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            yield f"{where}: securityContext.allowPrivilegeEscalation must be false"
        if _effective(pod_context, context, "runAsNonRoot") is not True:
            yield f"{where}: runAsNonRoot must be true (on the pod or the container)"
        if context.get("runAsUser") == 0:
            yield f"{where}: runAsUser must not be 0"
        seccomp = (context.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ALLOWED_SECCOMP:
            yield f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (pod or container): {seccomp!r}"
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"{where}: capabilities.drop must include ALL"
        extra = set(capabilities.get("add") or []) - RESTRICTED_ADDABLE_CAPABILITIES
        if extra:
            yield f"{where}: only NET_BIND_SERVICE may be added, not {sorted(extra)}"


def restricted_violations(manifest: dict[str, Any]) -> list[str]:
    """Every way the manifest's pod breaks the restricted Pod Security Standard (empty list: it complies)."""
    meta, pod = pod_template(manifest)
    name = f"{manifest.get('kind')}/{(manifest.get('metadata') or {}).get('name')}"
    return [f"{name}: {problem}" for problem in [*_baseline(meta, pod), *_restricted(pod)]]


def assert_restricted(manifest: dict[str, Any]) -> None:
    """Fail with every violation listed, for use in tests."""
    problems = restricted_violations(manifest)
    if problems:
        raise AssertionError("not admissible under the restricted Pod Security Standard:\n  " + "\n  ".join(problems))
