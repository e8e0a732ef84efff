"""Unit tests of the operator's layers, and the mock API server's own tests (the scenarios run on the real
control plane: tests/cluster)."""

from tests.support.kube.fixtures import (  # noqa: F401
    cluster,
    kube,
    kubeconfig,
    kubelet,
    operator,
    operator_settings,
)
