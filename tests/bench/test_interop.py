"""The interop table (``bench.interop``): rows from the interop marks, and docs/interop.md kept
up to date with the tests that prove each row."""

from __future__ import annotations

import re
from pathlib import Path

from bench.interop import Row, markdown

ROOT = Path(__file__).resolve().parents[2]


def test_each_row_says_its_result_and_the_command_that_reruns_it() -> None:
    rows = [
        Row("werift", "play", "VP8", "tests/interop/test_werift.py::test_werift_plays[VP8]"),
        Row("FFmpeg", "publish", "H.264", "tests/interop/test_ffmpeg.py::t", "passed", 6.2),
        Row("wrtc", "publish", "VP8", "tests/interop/test_wrtc.py::t", "failed", 30.0),
    ]
    text = markdown(rows, {"aiortc": "1.16.0"}, "2026-12-02")
    assert "**1 of 3 combinations work.**" in text
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[1] == (
        "| FFmpeg | publish | H.264 | works (6 s) | "
        "`.venv/bin/python -m pytest 'tests/interop/test_ffmpeg.py::t'` |"
    )
    assert "| werift | play | VP8 | not run |" in lines[2]
    assert "| wrtc | publish | VP8 | **fails** (30 s) |" in lines[3]
    assert "- aiortc: 1.16.0" in text
    assert "P-224" in text and "whipsink" in text and "H.264" in text


def test_the_table_in_the_docs_covers_every_interop_test_file() -> None:
    """A new file of interop tests needs the table regenerated: ``python -m bench.interop``."""
    table = (ROOT / "docs" / "interop.md").read_text()
    marked = [
        path.name
        for path in sorted((ROOT / "tests" / "interop").glob("test_*.py"))
        if "pytest.mark.interop(" in path.read_text()
    ]
    assert marked
    missing = [name for name in marked if not re.search(rf"tests/interop/{name}::", table)]
    assert not missing, f"{missing}: run python -m bench.interop to regenerate docs/interop.md"
