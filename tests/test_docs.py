"""The README is the contract with a newcomer: settings documented, CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from signaling.settings import SETTINGS
from tests.test_threat_model import references

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme() -> None:
    missing = [env for env, _ in SETTINGS if f"`{env}`" not in README]
    assert not missing, f"undocumented settings: {missing}"
    rows = [line.split("|")[1].strip() for line in README.splitlines() if line.startswith("| `")]
    twice = sorted({row for row in rows if rows.count(row) > 1})
    assert not twice, f"settings table rows listed twice: {twice}"


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in README
    assert "exec ./scripts/test" in ci


def test_the_readmes_run_command_exists_and_is_executable() -> None:
    assert "./scripts/serve" in README
    for script in ("serve", "test", "bootstrap"):
        assert (ROOT / "scripts" / script).stat().st_mode & 0o111


def test_the_rfc9725_table_names_every_conformance_test_and_only_existing_ones() -> None:
    """docs/rfc9725.md: each requirement's test exists, and each section-named test is listed."""
    table = (ROOT / "docs" / "rfc9725.md").read_text()
    named = {(file, test) for _, file, test in references(table)}
    missing = [
        f"{file}::{test}"
        for file, test in sorted(named)
        if not re.search(rf"^(async )?def {test}\(", (ROOT / file).read_text(), re.M)
    ]
    assert not missing, f"docs/rfc9725.md names tests that do not exist: {missing}"
    for part in ("", "_ice", "_policy"):
        file = f"tests/signaling/test_rfc9725{part}.py"
        written = re.findall(r"^(?:async )?def (test_\w+)\(", (ROOT / file).read_text(), re.M)
        unlisted = [test for test in written if (file, test) not in named]
        assert written and not unlisted, f"{file}: not in docs/rfc9725.md: {unlisted}"
