"""The images tier: build kubetune's three images from their Dockerfiles and run them (tests/support/images.py).

Without buildah (and mmdebstrap, root) the tier, and the tests marked `images` elsewhere, are not run and the
session says so in one line with how to get them; with KUBETUNE_REQUIRE_IMAGES=1 (CI, .ci/run) a missing tool
fails the run instead. The session's summary reports the seconds spent building and running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import images, tiers

TIER = Path(__file__).parent
REQUIRE_ENV = "KUBETUNE_REQUIRE_IMAGES"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not images.missing_tools() or os.environ.get(REQUIRE_ENV) == "1":
        return
    tiers.set_aside(
        config, items, "images", lambda item: TIER in Path(str(item.path)).parents or item.get_closest_marker("images")
    )


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    count = tiers.not_run(config, "images")
    if count:
        missing = ", ".join(images.missing_tools())
        terminalreporter.write_line(f"images tier: {count} tests not run (missing {missing}); {images.HOW_TO_GET}")
    elif images.TIMINGS.steps:
        terminalreporter.write_line(images.TIMINGS.line())


@pytest.fixture(scope="session")
def buildah() -> images.Buildah:
    missing = images.missing_tools()
    if missing:
        pytest.fail(f"{REQUIRE_ENV}=1 but this machine lacks {', '.join(missing)}: {images.HOW_TO_GET}")
    return images.session_buildah()


@pytest.fixture
def container(buildah) -> Iterator:
    """A factory of working containers of a built image, removed after the test."""
    made: list[images.Container] = []

    def make(image: images.Image) -> images.Container:
        made.append(images.Container(buildah, image))
        return made[-1]

    yield make
    for one in made:
        one.remove()
