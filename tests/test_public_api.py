"""The one rule for plugins: import only from `harness`. The built-ins keep it too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import harness

ROOT = Path(__file__).resolve().parent.parent
BUILT_INS = [*sorted((ROOT / "plugins").rglob("*.py")), *sorted((ROOT / "reports").rglob("*.py"))]
# Built-ins may import their own package's private helpers (harness.plugins.*, ...).
OWN_PACKAGES = ("plugins", "reports", "suites")


def private_imports(path: Path) -> list[str]:
    """`module: names` for every import of a private core module in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "harness" and len(parts) > 1 and parts[1] not in OWN_PACKAGES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if node.module == "harness":
                found += [
                    f"line {node.lineno}: from harness import {a.name} (a module, not the API)"
                    for a in node.names
                    if a.name not in harness.__all__
                ]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("harness.") and a.name.split(".")[1] not in OWN_PACKAGES
            ]
    return found


@pytest.mark.parametrize("path", BUILT_INS, ids=lambda p: str(p.relative_to(ROOT)))
def test_built_in_imports_only_the_public_api(path: Path) -> None:
    assert private_imports(path) == [], f"{path.relative_to(ROOT)} reaches private core modules"


def test_the_check_catches_a_private_import(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "from harness import hookimpl\n"
        "from harness.components.contracts import Detector\n"
        "import harness.store.core\n"
        "from harness.plugins.detectors._text import TOKEN\n"
    )
    assert private_imports(plugin) == [
        "line 2: from harness.components.contracts import ...",
        "line 3: import harness.store.core",
    ]


@pytest.mark.parametrize("name", harness.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(harness, name) is not None


def test_contracts_name_only_public_types() -> None:
    """What a plugin receives or returns is importable from `harness`."""
    for name in ("Failure", "Cluster", "DataRequest", "Progress", "TrainingOutcome", "Document", "Queries"):
        assert name in harness.__all__
