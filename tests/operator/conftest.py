"""Operator tests run the real operator (kopf, in a thread) against the mock API server."""

from tests.support.kube.fixtures import (  # noqa: F401
    api_permissions,
    cluster,
    kube,
    kubeconfig,
    kubelet,
    operator,
    operator_settings,
)
