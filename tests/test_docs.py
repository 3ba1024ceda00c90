"""The README is the contract with a newcomer: settings documented, CI runs its test command."""

from __future__ import annotations

from pathlib import Path

from signaling.settings import SETTINGS

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
