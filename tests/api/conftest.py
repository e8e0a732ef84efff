"""Valid starting points for the API tests; each test changes one thing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

VALID_FTJ_SPEC: dict[str, Any] = {
    "baseModel": {"name": "org/model"},
    "dataset": {"configMap": {"name": "data", "key": "rows.jsonl"}},
}
VALID_MSV_SPEC: dict[str, Any] = {"adapters": [{"name": "a1", "fineTuneJobRef": {"name": "job-1"}}]}


@pytest.fixture
def ftj_spec() -> dict[str, Any]:
    return copy.deepcopy(VALID_FTJ_SPEC)


@pytest.fixture
def msv_spec() -> dict[str, Any]:
    return copy.deepcopy(VALID_MSV_SPEC)


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file:index, document) for every YAML document under examples/."""
    found = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for index, document in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if document:
                found.append((f"{path.name}:{index}", document))
    return found
