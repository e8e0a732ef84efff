"""pytest plugin for the RBAC recording run (`-p tests.deploy.scenario_selection`): keep only the tests that run
the real operator.

The operator suite also tests the mock API server itself, and some of those tests send requests with the
operator's User-Agent on purpose (to check that operator writes are validated and recorded). Those requests are
not the operator's, so they must not decide what the operator's RBAC grants.
"""

from __future__ import annotations

import pytest

OPERATOR_FIXTURES = frozenset({"operator", "operator_settings"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    runs_operator = [item for item in items if OPERATOR_FIXTURES & set(getattr(item, "fixturenames", ()))]
    others = [item for item in items if item not in runs_operator]
    if others:
        config.hook.pytest_deselected(items=others)
    items[:] = runs_operator
