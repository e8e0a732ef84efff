"""The end-to-end test runs the real operator against the mock API server, like the operator tests."""

from tests.support.kube.fixtures import (  # noqa: F401
    api_permissions,
    cluster,
    kube,
    kubeconfig,
    kubelet,
    operator,
    operator_settings,
)
