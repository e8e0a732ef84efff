"""The operator's only door to the API server: get, list, create-or-ignore, patch, delete, events.

Plain dicts in and out over the official client's ApiClient (auth, TLS, connection pooling), so the
manifest builders and the reconcile logic never see client models.
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from kubetune import __version__

log = logging.getLogger(__name__)
USER_AGENT = f"kubetune-operator/{__version__}"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    api_version: str
    plural: str
    kind: str

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}" if namespace else f"{base}/{self.plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path


FINETUNEJOBS = Resource("kubetune.dev/v1alpha1", "finetunejobs", "FineTuneJob")
MODELSERVES = Resource("kubetune.dev/v1alpha1", "modelserves", "ModelServe")
FINETUNERUNTIMES = Resource("kubetune.dev/v1alpha1", "finetuneruntimes", "FineTuneRuntime")  # cluster-scoped
JOBS = Resource("batch/v1", "jobs", "Job")
PODS = Resource("v1", "pods", "Pod")
CONFIGMAPS = Resource("v1", "configmaps", "ConfigMap")
CLAIMS = Resource("v1", "persistentvolumeclaims", "PersistentVolumeClaim")
SERVICEACCOUNTS = Resource("v1", "serviceaccounts", "ServiceAccount")
SERVICES = Resource("v1", "services", "Service")
EVENTS = Resource("v1", "events", "Event")
DEPLOYMENTS = Resource("apps/v1", "deployments", "Deployment")
ROLES = Resource("rbac.authorization.k8s.io/v1", "roles", "Role")
ROLEBINDINGS = Resource("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding")


def kueue_workloads(api_version: str) -> Resource:
    """Kueue's Workload (one per queued Job); not in BY_KIND: the operator never creates one."""
    return Resource(api_version, "workloads", "Workload")


BY_KIND = {
    res.kind: res
    for res in (
        FINETUNEJOBS,
        MODELSERVES,
        JOBS,
        PODS,
        CONFIGMAPS,
        CLAIMS,
        SERVICEACCOUNTS,
        SERVICES,
        EVENTS,
        DEPLOYMENTS,
        ROLES,
        ROLEBINDINGS,
    )
}


class KubeApiError(Exception):
    """A failed API call with its HTTP status and the server's reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def load_configuration(kubeconfig: str | None) -> kubernetes.client.Configuration:
    """In-cluster config when running in a pod, else the given kubeconfig (or $KUBECONFIG, ~/.kube/config)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return configuration
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    """Synchronous, thread-safe: kopf runs the sync handlers in a thread pool."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self.client = kubernetes.client.ApiClient(configuration)
        self.client.user_agent = USER_AGENT

    def close(self) -> None:
        self.client.close()

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            method, url, headers, body, post = self.client.param_serialize(
                method,
                path,
                query_params=list((query or {}).items()) or None,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.client.call_api(method, url, headers, body, post, _request_timeout=30)
        except ApiException as exc:
            raise self._error(int(exc.status or 0), exc.reason or "", exc.body) from None
        data = response.read()
        if response.status >= 400:
            raise self._error(response.status, response.reason or "", data)
        return json.loads(data) if data else None

    @staticmethod
    def _error(status: int, reason: str, body: Any) -> KubeApiError:
        message = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
        try:
            document = json.loads(message)
            reason, message = document.get("reason") or reason, document.get("message") or message
        except (TypeError, ValueError, AttributeError):
            pass
        return KubeApiError(status, reason, message)

    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("GET", res.path(namespace, name))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, res: Resource, namespace: str | None, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects filtered by the API server (`field_selector`: e.g. the Events of one object by uid)."""
        query = {
            key: value for key, value in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if value
        }
        return self._call("GET", res.path(namespace), query=query or None)["items"]

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when an object of that name already exists (deterministic names make this idempotent)."""
        res = BY_KIND[body["kind"]]
        try:
            return self._call("POST", res.path(body["metadata"].get("namespace")), body)
        except KubeApiError as exc:
            if exc.status == 409:
                return None
            raise

    def patch(
        self, res: Resource, namespace: str | None, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any] | None:
        """JSON merge patch (lists are replaced as a whole); None when the object is gone."""
        try:
            return self._call("PATCH", res.path(namespace, name, subresource), patch, content_type=MERGE_PATCH)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        try:
            self._call("DELETE", res.path(namespace, name), query={"propagationPolicy": "Background"})
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event on `owner` (shown by kubectl describe); failures are logged, never raised."""
        meta = owner["metadata"]
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kubetune-operator"},
            "reportingComponent": "kubetune.dev/operator",
            "reportingInstance": "kubetune-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.create(body)
        except KubeApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc)
