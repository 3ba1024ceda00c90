"""docs/threat-model.md names a test behind every mitigation: each named test must exist, so the
document cannot keep a claim whose test was renamed or deleted."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THREAT_MODEL = ROOT / "docs" / "threat-model.md"
REFERENCE = re.compile(
    r"(?<![\w/])(?:(?P<branch>[\w-]+):)?(?P<file>tests/[\w/]+\.py)::(?P<test>\w+)"
)
PENDING_BRANCHES = {"metrics"}
"Branches not merged yet: their tests may be named before their files exist here."


def references(text: str) -> list[tuple[str | None, str, str]]:
    return [(m["branch"], m["file"], m["test"]) for m in REFERENCE.finditer(text)]


def test_references_are_parsed_with_and_without_a_branch() -> None:
    text = "`tests/a/test_x.py::test_one`, `metrics:tests/test_y.py::test_two`; not tests/z.py"
    assert references(text) == [
        (None, "tests/a/test_x.py", "test_one"),
        ("metrics", "tests/test_y.py", "test_two"),
    ]


def test_every_test_the_threat_model_names_exists() -> None:
    text = THREAT_MODEL.read_text()
    found = references(text)
    assert len(found) >= 100, "the threat model names its tests as tests/<file>.py::<test>"
    malformed = len(re.findall(r"::\w", text)) - len(found)
    assert not malformed, f"{malformed} references are not tests/<file>.py::<test>"
    missing = []
    for branch, file, test in found:
        path = ROOT / file
        if not path.exists():
            if branch not in PENDING_BRANCHES:
                missing.append(f"{file} (no such file)")
            continue
        if not re.search(rf"^(async )?def {test}\(", path.read_text(), re.MULTILINE):
            missing.append(f"{file}::{test}")
    assert not missing, f"docs/threat-model.md names tests that do not exist: {missing}"
