"""The pure layers stay pure: reconcile logic and manifest builders import neither kopf nor kubernetes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "kubetune" / "operator"
PURE = sorted(
    [*PACKAGE.glob("reconcile/*.py"), *PACKAGE.glob("manifests/*.py"), PACKAGE / "settings.py", PACKAGE / "naming.py"]
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    relative = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
    return names | {f"kubetune.operator.{name}" for name in relative}


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_module_imports_no_kubernetes_client(path: Path):
    forbidden = {name for name in _imports(path) if name.split(".")[0] in {"kopf", "kubernetes", "aiohttp"}}
    forbidden |= {name for name in _imports(path) if name.endswith((".kube", ".handlers", ".services", ".runner"))}
    assert not forbidden, f"{path.name} imports {sorted(forbidden)}"
