"""A fresh machine passes: every program the code and tests run is installed by scripts/.

A developer machine with a tool installed by hand hides a missing install step (it happened with
ffprobe). This test finds each external program named in the source — an absolute ``/usr/bin/…``
path, a ``shutil.which("…")`` look-up, or the first word of a ``subprocess`` command — and asks
dpkg which Debian package owns it; that package must be one the scripts install with
``apt_install`` or part of every Debian system (Essential).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.source_tree import parsed

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("relay", "recorder", "signaling", "client", "persistence", "bench", "tests")
_SYSTEM_PATH = re.compile(r"^/usr/s?bin/[\w.+-]+$")
# Programs that come from PyPI with an extra of pyproject.toml, not from Debian.
PYPI_PROGRAMS = {"py-spy": "bench"}
# Programs a machine has by the time it runs the scripts at all.
GIVEN = {"git": "the checkout was made with it (bench/fanout.py only labels results with it)"}
_APT_INSTALL = re.compile(r"^\s*apt_install\s+(?P<packages>[^#\n]+)", re.M)


def scripted_packages() -> set[str]:
    """Debian packages that scripts/ installs (every ``apt_install pkg…`` call)."""
    found: set[str] = set()
    for script in (ROOT / "scripts").iterdir():
        for match in _APT_INSTALL.finditer(script.read_text()):
            found.update(w for w in match["packages"].split() if re.fullmatch(r"[a-z0-9.+-]+", w))
    return found


def programs_named_in_source() -> dict[str, str]:
    """Program path or name → the first file that names it."""
    named: dict[str, str] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).exists() else []:
            for node in ast.walk(parsed(path)):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if _SYSTEM_PATH.match(node.value):
                        named.setdefault(node.value, str(path.relative_to(ROOT)))
                elif (
                    isinstance(node, ast.Call)
                    and ast.unparse(node.func).startswith("subprocess.")
                    and node.args
                    and isinstance(node.args[0], ast.List)
                    and node.args[0].elts
                    and isinstance(node.args[0].elts[0], ast.Constant)
                    and isinstance(node.args[0].elts[0].value, str)
                ):
                    named.setdefault(node.args[0].elts[0].value, str(path.relative_to(ROOT)))
                elif (
                    isinstance(node, ast.Call)
                    and ast.unparse(node.func) == "shutil.which"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    named.setdefault(node.args[0].value, str(path.relative_to(ROOT)))
    return named


def owning_package(program: str) -> str | None:
    path = program if program.startswith("/") else shutil.which(program)
    if path is None or not Path(path).exists():
        return None
    for candidate in dict.fromkeys((path, str(Path(path).resolve()))):
        out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            return out.stdout.split(":", 1)[0].strip()
    return "?"


def essential(package: str) -> bool:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Essential}", package],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip() == "yes"


def test_the_scripts_install_the_tools_the_tests_need() -> None:
    assert {"chromium", "ffmpeg"} <= scripted_packages()


def test_programs_from_pypi_are_in_their_extra() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for program, extra in PYPI_PROGRAMS.items():
        assert any(dep.startswith(program) for dep in extras[extra]), (program, extra)


@pytest.mark.parametrize(
    "program", sorted(set(programs_named_in_source()) - set(PYPI_PROGRAMS) - set(GIVEN))
)
def test_every_program_the_code_runs_is_installed_by_the_scripts(program: str) -> None:
    where = programs_named_in_source()[program]
    package = owning_package(program)
    assert package is not None, (
        f"{where} runs {program}, which is not on this machine: add its Debian package to an "
        "apt_install line in scripts/"
    )
    assert package in scripted_packages() or essential(package), (
        f"{where} runs {program} from the Debian package {package!r}, which scripts/ never "
        "installs: a fresh machine would fail. Add it to an apt_install line in scripts/"
    )


def test_the_label_font_comes_from_a_package_the_scripts_install() -> None:
    """The server draws burned-in labels with a Debian font at run time, not only in tests."""
    from relay.labels import FONT_PATH

    assert owning_package(str(FONT_PATH)) == "fonts-noto-cjk"
    assert "fonts-noto-cjk" in scripted_packages()
