"""The real-control-plane tier: the operator, as its ServiceAccount, against kube-apiserver and the real
controllers (tests/support/envtest). Skipped, with how to get the binaries, when KUBEBUILDER_ASSETS is unset."""

from tests.support.envtest.fixtures import (  # noqa: F401
    control_plane,
    kube,
    kubelet,
    ns,
    operator,
    operator_settings,
)
