"""Report progress and final metrics from inside the pod, with the standard library only.

The pod's service account may patch only its own report ConfigMap (the operator's Role restricts it by
resourceNames); it cannot write the FineTuneJob or its status. The trainer writes `data.progress` and, at the
end, `data.metrics` (JSON); the operator validates them and copies them into the FineTuneJob's status, and owns
everything else there. At the very end the trainer also copies its result files there (results_report), for
`kubetune results`; the operator ignores them. A failed patch never fails training, and the token never appears in logs.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubetune.api.runtime import ENV_NAMESPACE, ENV_REPORT_CONFIGMAP

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PATCH_TIMEOUT_SECONDS = 5.0


class KubeStatusClient:
    """Merge-patches the report ConfigMap `/api/v1/namespaces/<ns>/configmaps/<name>` (`name`: ENV_REPORT_CONFIGMAP)."""

    def __init__(
        self,
        base_url: str,
        namespace: str,
        name: str,
        token_file: Path,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = PATCH_TIMEOUT_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace
        self.name = name
        self.token_file = token_file
        self.ssl_context = ssl_context
        self.timeout = timeout

    @property
    def report_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, account_dir: Path | None = None
    ) -> KubeStatusClient | None:
        """A client when running in a pod with a token and a report ConfigMap, else None (report to a file)."""
        environ = os.environ if environ is None else environ
        account_dir = account_dir or SERVICE_ACCOUNT_DIR
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
        name, namespace = environ.get(ENV_REPORT_CONFIGMAP), environ.get(ENV_NAMESPACE)
        token_file = account_dir / "token"
        if not (host and name and token_file.is_file()):
            return None
        if not namespace and (account_dir / "namespace").is_file():
            namespace = (account_dir / "namespace").read_text().strip()
        if not namespace:
            return None
        ca_file = account_dir / "ca.crt"
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file.is_file() else None)
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls(f"https://{netloc}", namespace, name, token_file, context)

    def patch_status(self, status: dict[str, Any]) -> bool:
        """Send each top-level field of `status` (progress, metrics) as one JSON value of the ConfigMap's data, as a
        merge patch; True on success, a warning (no token) on failure."""
        data = {key: json.dumps(value, sort_keys=True) for key, value in status.items()}
        return self.patch({"data": data})

    def patch(self, patch: dict[str, Any], timeout: float | None = None) -> bool:
        """Merge-patch the report ConfigMap with `patch` (data, binaryData); True on success, else a warning."""
        body = json.dumps(patch).encode()
        try:
            # Re-read each time: projected service account tokens are rotated by the kubelet.
            token = self.token_file.read_text().strip()
            request = urllib.request.Request(
                self.base_url + self.report_path,
                data=body,
                method="PATCH",
                headers={
                    "Content-Type": "application/merge-patch+json",
                    "Accept": "application/json",
                    "Authorization": f"Bearer {token}",
                },
            )
            with urllib.request.urlopen(request, timeout=timeout or self.timeout, context=self.ssl_context) as response:
                response.read()
            return True
        except urllib.error.HTTPError as error:
            log.warning("report patch of configmap %s/%s failed: HTTP %s", self.namespace, self.name, error.code)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or type(error).__name__
            log.warning("report patch of configmap %s/%s failed: %s", self.namespace, self.name, reason)
        return False
