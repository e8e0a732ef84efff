"""Run the mock API server in its own thread and event loop, and talk to it synchronously from tests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import kmock
import yaml

from .mock import RealisticKubernetes
from .resources import load_crds
from .validation import ManifestValidator

TEST_AGENT = "kubetune-tests/1"


class MockCluster:
    """A running mock API server with a kubeconfig; `validate=True` rejects invalid operator writes."""

    def __init__(self, validate: bool = True) -> None:
        self.validator = ManifestValidator(load_crds()) if validate else None
        self.api = RealisticKubernetes(validator=self.validator)
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mock-apiserver", daemon=True)

    def __enter__(self) -> MockCluster:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the mock API server did not start within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self.api.close_watches)
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.api, kmock.Server(self.api) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    @property
    def state(self):
        return self.api.state

    @property
    def recorder(self):
        return self.api.recorder

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "mock", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "tester", "user": {"token": "mock-token"}}],
            "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "tester", "namespace": "default"}}],
            "current-context": "mock",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def client(self, agent: str = TEST_AGENT) -> KubeTestClient:
        return KubeTestClient(self.url, agent)


def resource_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return f"{path}/{name}" if name else path


FTJ = ("kubetune.dev/v1alpha1", "finetunejobs")
MSV = ("kubetune.dev/v1alpha1", "modelserves")
JOBS = ("batch/v1", "jobs")
PODS = ("v1", "pods")
DEPLOYMENTS = ("apps/v1", "deployments")
SERVICES = ("v1", "services")
CONFIGMAPS = ("v1", "configmaps")
SECRETS = ("v1", "secrets")
PVCS = ("v1", "persistentvolumeclaims")
SERVICEACCOUNTS = ("v1", "serviceaccounts")
ROLES = ("rbac.authorization.k8s.io/v1", "roles")
ROLEBINDINGS = ("rbac.authorization.k8s.io/v1", "rolebindings")
EVENTS = ("v1", "events")


class KubeTestClient:
    """A small synchronous client for tests and the kubelet helper (independent of the operator's code)."""

    def __init__(self, url: str, agent: str = TEST_AGENT, headers: dict[str, str] | None = None, **http: Any) -> None:
        """`http` options (verify, cert) reach httpx: the real control plane needs TLS, the mock does not."""
        self.http = httpx.Client(base_url=url, headers={"User-Agent": agent, **(headers or {})}, timeout=10, **http)

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise KubeError(response.status_code, response.json())
        return response.json()

    def get(self, res: tuple[str, str], namespace: str | None, name: str) -> dict[str, Any]:
        return self._check(self.http.get(resource_path(*res, namespace, name)))

    def find(self, res: tuple[str, str], namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.get(res, namespace, name)
        except KubeError as exc:
            if exc.code == 404:
                return None
            raise

    def list(self, res: tuple[str, str], namespace: str | None = None, labels: str | None = None) -> list[dict]:
        params = {"labelSelector": labels} if labels else {}
        return self._check(self.http.get(resource_path(*res, namespace), params=params))["items"]

    def create(self, res: tuple[str, str], namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(self.http.post(resource_path(*res, namespace), json=body))

    def create_subresource(
        self, res: tuple[str, str], namespace: str | None, name: str, subresource: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """POST to a subresource: a pod's binding, a ServiceAccount's token."""
        return self._check(self.http.post(resource_path(*res, namespace, name) + f"/{subresource}", json=body))

    def patch(
        self, res: tuple[str, str], namespace: str | None, name: str, body: Any, subresource: str | None = None
    ) -> dict[str, Any]:
        path = resource_path(*res, namespace, name) + (f"/{subresource}" if subresource else "")
        kind = "application/json-patch+json" if isinstance(body, list) else "application/merge-patch+json"
        return self._check(self.http.patch(path, content=json.dumps(body), headers={"Content-Type": kind}))

    def delete(self, res: tuple[str, str], namespace: str | None, name: str) -> dict[str, Any]:
        return self._check(self.http.delete(resource_path(*res, namespace, name)))

    def wait_for(
        self,
        res: tuple[str, str],
        namespace: str | None,
        name: str,
        predicate: Callable[[dict[str, Any] | None], bool],
        timeout: float = 10.0,
        what: str = "",
    ) -> dict[str, Any] | None:
        """Poll until `predicate(object or None)` holds; fail with the last state seen."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.find(res, namespace, name)
            if predicate(obj):
                return obj
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {res[1]} {namespace}/{name} {what}; last seen: "
                    f"{(obj or {}).get('status')!r}"
                )
            time.sleep(0.02)


class KubeError(Exception):
    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(f"{code} {body.get('reason')}: {body.get('message')}")
        self.code, self.body = code, body
