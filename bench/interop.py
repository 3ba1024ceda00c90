"""The interop table: which outside WebRTC clients publish to and play from EndoLink, proven by
tests against a real ``endolink serve``, written to docs/interop.md.

    python -m bench.interop [--out docs/interop.md] [PYTEST ARGS...]

Runs ``pytest tests/interop`` with this module as a plugin (``-p bench.interop``): every test
carrying ``@pytest.mark.interop(client=…, role=…, codec=…)`` becomes one row (a test with several
such marks, several rows) with its outcome and its node id as the command that re-runs it. Tests
without the mark (a limit being confirmed, a helper check) run too but make no row. The table is
written when every test ran, even if some failed (not after an interruption or a usage error);
the exit code is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS_ENV = "ENDOLINK_INTEROP_RESULTS"
"Where the plugin writes its rows (JSON), set by ``main`` for the pytest it runs."
JS_DIR = ROOT / "tests" / "interop" / "js"
DEBIAN_PACKAGES = ("chromium", "nodejs", "ffmpeg", "gstreamer1.0-plugins-bad")
"Debian packages whose versions the table names (a package not installed is said to be so)."
KNOWN_LIMITS = """\
- **FFmpeg built on GnuTLS** (the PyAV wheel's FFmpeg 8 among them) makes its own DTLS
  certificate on the P-224 curve, which the relay's OpenSSL cannot use at all (no server setting
  helps): the session fails, and the server logs one warning naming the cause. Give FFmpeg a
  P-256 certificate (`endolink certs --dtls-client DIR`, then `-cert_file`/`-key_file`; README,
  "FFmpeg"). Shown by
  `tests/interop/test_ffmpeg.py::test_ffmpegs_own_p224_certificate_fails_with_a_plain_server_warning`.
- FFmpeg's `whip` muxer sends H.264 only (and Opus), and uses only the **first** host candidate
  of the answer: set `ENDOLINK_ICE_HOST_ADDRESSES` so that the address FFmpeg reaches comes first.
- **libwebrtc in @roamhq/wrtc** has no H.264: on an H.264 consultation its offer is refused with
  422 and the reason ("this consultation uses H264 for video; the offer does not include it").
  Shown by
  `tests/interop/test_wrtc.py::test_wrtc_is_told_in_words_that_an_h264_consultation_needs_h264`.
- **GStreamer before 1.24** (Debian 12 has 1.22) has no `whipsink`/`whipclientsink`: hospital
  pipelines drive `webrtcbin` and do the WHIP/WHEP POST themselves (README, "GStreamer").
- The Safari rows check the answer to a Safari-shaped offer only; no Safari runs here.
"""


@dataclass(frozen=True)
class Row:
    """One client × role × codec, proven (or not) by one test."""

    client: str
    role: str
    codec: str
    nodeid: str
    outcome: str = "not run"
    seconds: float = 0.0


# -- the pytest plugin ----------------------------------------------------------------------------


class Recorder:
    """Collects each interop test's marks and outcome; writes them at the end of the session."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.marks: dict[str, list[dict[str, str]]] = {}
        self.outcomes: dict[str, tuple[str, float]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:  # what runs: after -k / -m deselection
            marks = [dict(m.kwargs) for m in item.iter_markers("interop")]
            if marks:
                self.marks[item.nodeid] = marks

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome, seconds = self.outcomes.get(report.nodeid, ("passed", 0.0))
        if report.failed:
            outcome = "failed"
        elif report.skipped and outcome == "passed":
            outcome = "skipped"
        self.outcomes[report.nodeid] = (outcome, seconds + report.duration)

    def pytest_sessionfinish(self) -> None:
        rows = [
            Row(
                m["client"],
                m["role"],
                m["codec"],
                nodeid,
                *self.outcomes.get(nodeid, ("not run", 0)),
            )
            for nodeid, marks in self.marks.items()
            for m in marks
        ]
        self.path.write_text(json.dumps([asdict(r) for r in rows], indent=2))


def pytest_configure(config: pytest.Config) -> None:
    """Loaded with ``-p bench.interop``: record only when ``main`` asked for it."""
    if os.environ.get(RESULTS_ENV):
        config.pluginmanager.register(Recorder(Path(os.environ[RESULTS_ENV])), "interop-recorder")


# -- the table ------------------------------------------------------------------------------------


def command(nodeid: str) -> str:
    return f"`.venv/bin/python -m pytest '{nodeid}'`"


def result(row: Row) -> str:
    word = {"passed": "works", "failed": "**fails**"}.get(row.outcome, row.outcome)
    return f"{word} ({row.seconds:.0f} s)" if row.outcome in ("passed", "failed") else word


def table(rows: Iterable[Row]) -> Iterator[str]:
    yield "| client | role | codec | result | command |"
    yield "|---|---|---|---|---|"
    for r in sorted(rows, key=lambda r: (r.client.lower(), r.role, r.codec)):
        yield f"| {r.client} | {r.role} | {r.codec} | {result(r)} | {command(r.nodeid)} |"


def markdown(rows: list[Row], versions: dict[str, str], date: str) -> str:
    working = sum(r.outcome == "passed" for r in rows)
    lines = [
        "# Interop table",
        "",
        f"Generated by `python -m bench.interop` on {date}; do not edit by hand. Each row is one",
        "test against a real `endolink serve` on 127.0.0.1 (its own data directory, real peer",
        "connections, real encoded frames): the client publishes to (`publish`) or plays from",
        "(`play`) a consultation of that codec, and the far side checks that stamped frames arrive",
        "in order. The command re-runs that one test.",
        "",
        f"**{working} of {len(rows)} combinations work.**",
        "",
        *table(rows),
        "",
        "## Versions",
        "",
        *(f"- {name}: {version}" for name, version in versions.items()),
        "",
        "## Known limits",
        "",
        KNOWN_LIMITS.rstrip(),
        "",
    ]
    return "\n".join(lines)


# -- versions -------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """What ran: this checkout, the Python stack, the npm clients, the Debian packages."""
    import aiortc
    import av

    found = {
        "EndoLink": _run(["git", "rev-parse", "--short", "HEAD"]) or "unknown commit",
        "Python": platform.python_version(),
        "aiortc": aiortc.__version__,
        "PyAV (its FFmpeg)": f"{av.__version__} (FFmpeg {av.ffmpeg_version_info})",
    }
    for package in ("werift", "@roamhq/wrtc"):
        manifest = JS_DIR / "node_modules" / package / "package.json"
        found[f"{package} (npm)"] = (
            json.loads(manifest.read_text())["version"] if manifest.exists() else "not installed"
        )
    for package in DEBIAN_PACKAGES:
        version = _run(["dpkg-query", "-W", "-f", "${Version}", package])
        found[f"{package} (Debian)"] = version or "not installed"
    return found


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "interop.md")
    args, pytest_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="endolink-interop-") as work:
        results = Path(work) / "results.json"
        env = {**os.environ, RESULTS_ENV: str(results)}
        run = [sys.executable, "-m", "pytest", "-p", "bench.interop", "-q", "tests/interop"]
        code = subprocess.run([*run, *pytest_args], cwd=ROOT, env=env).returncode
        if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) or not results.exists():
            print(f"pytest did not finish (exit code {code}): table unchanged", file=sys.stderr)
            return code or 1
        rows = [Row(**r) for r in json.loads(results.read_text())]
    args.out.write_text(markdown(rows, versions(), time.strftime("%Y-%m-%d")))
    print(f"{args.out}: {sum(r.outcome == 'passed' for r in rows)} of {len(rows)} work")
    return code


if __name__ == "__main__":
    sys.exit(main())
