"""Optional test tiers (the real control plane, the images): set aside, and counted, on a machine without their
tools, so the session can say in one line what did not run and how to get it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

NOT_RUN = pytest.StashKey[dict[str, int]]()


def set_aside(
    config: pytest.Config, items: list[pytest.Item], tier: str, belongs: Callable[[pytest.Item], object]
) -> None:
    """Deselect the tests of `tier` (reported as deselected) and remember how many for not_run()."""
    chosen = [item for item in items if belongs(item)]
    if chosen:
        config.hook.pytest_deselected(items=chosen)
        items[:] = [item for item in items if item not in chosen]
        config.stash.setdefault(NOT_RUN, {})[tier] = len(chosen)


def not_run(config: pytest.Config, tier: str) -> int:
    """How many tests of `tier` set_aside() took out of this session."""
    return config.stash.get(NOT_RUN, {}).get(tier, 0)
