"""The real-control-plane tier: the operator, as its ServiceAccount, against kube-apiserver and the real
controllers (tests/support/envtest).

Without KUBEBUILDER_ASSETS the tier is not run, and the session says so in one line with how to get the binaries;
with KUBETUNE_REQUIRE_ENVTEST=1 (CI) a missing control plane fails the run instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import tiers
from tests.support.envtest.controlplane import HOW_TO_GET, REQUIRE_ENV, assets_folder
from tests.support.envtest.fixtures import (  # noqa: F401
    control_plane,
    kube,
    kubelet,
    ns,
    operator,
    operator_settings,
)

TIER = Path(__file__).parent
AFTER_EVERYTHING = "test_rbac_audit.py"  # reads the audit log all other tests of the session wrote
COLLECTED_MODULES = pytest.StashKey[set[str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[COLLECTED_MODULES] = {Path(str(item.path)).name for item in items}
    last = [item for item in items if Path(str(item.path)).name == AFTER_EVERYTHING]
    items[:] = [item for item in items if item not in last] + last
    if assets_folder() is not None or os.environ.get(REQUIRE_ENV) == "1":
        return
    tiers.set_aside(config, items, "cluster", lambda item: TIER in Path(str(item.path)).parents)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    count = tiers.not_run(config, "cluster")
    if count:
        terminalreporter.write_line(f"real-control-plane tier: {count} tests not run; {HOW_TO_GET}", yellow=True)
