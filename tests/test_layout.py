"""The house rules that keep the code base readable, checked rather than hoped for.

- Layers: media code (`relay/`, `recorder/`) never imports the web edge (`signaling/`); the client
  and persistence packages stand below the server and import none of it.
- Size: no Python module outside tests/bench over 500 lines, no JavaScript module over 600.
- The module table of docs/architecture.md names every module, and only modules that exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.source_tree import parsed

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("client", "persistence", "recorder", "relay", "signaling")
# package -> the project packages it must never import
FORBIDDEN = {
    "relay": {"signaling", "recorder", "client"},
    "recorder": {"signaling", "client"},
    "client": {"signaling", "relay", "recorder", "persistence"},
    "persistence": {"signaling", "relay", "recorder", "client"},
}
MAX_PY_LINES = 500
MAX_JS_LINES = 600


def modules(package: str) -> list[Path]:
    folder = ROOT / package
    return sorted(folder.rglob("*.py")) if folder.is_dir() else []


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_the_layers_above(package: str) -> None:
    crossings = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(package)
        for name in sorted(imported_packages(path) & FORBIDDEN[package])
    ]
    assert not crossings, crossings


def test_no_python_module_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for package in PACKAGES
        for path in modules(package)
        if (n := len(path.read_text().splitlines())) > MAX_PY_LINES
    }
    assert not long, long


def test_no_javascript_module_is_over_600_lines() -> None:
    long = {
        path.name: n
        for path in sorted((ROOT / "web" / "js").glob("*.js"))
        if (n := len(path.read_text().splitlines())) > MAX_JS_LINES
    }
    assert not long, long


def documented_modules() -> set[str]:
    """Paths named in the first column of docs/architecture.md's module table. A row may name
    several modules: a bare file name belongs to the folder of the path before it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) < 3 or set(cells[1].strip()) <= {"-"}:
            continue
        folder = ""
        for token in re.findall(r"`([^`]+)`", cells[1]):
            if "/" in token:
                folder = token.rsplit("/", 1)[0]
                named.add(token)
            elif folder:
                named.add(f"{folder}/{token}")
    return named


def test_the_module_table_names_every_module_and_only_real_ones() -> None:
    actual = {
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in modules(package)
        if path.name not in ("__init__.py", "__main__.py")
    }
    documented = documented_modules()
    assert not actual - documented, (
        f"missing from docs/architecture.md: {sorted(actual - documented)}"
    )
    assert not documented - actual, f"named but absent: {sorted(documented - actual)}"
