"""Snapshot images (PNG snapshots, JPEG stills) checked against the audit trail: each
``snapshot`` entry carries the SHA-256 of the image as it was stored, and the entry is
hash-chained, so an image replaced or edited on disk later no longer matches (``endolink audit
verify --files``). Entries from before the hash was recorded name no hash and are not checked."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from persistence.database import Connection
from recorder.snapshots import SnapshotStore
from relay import ConsultationId

_DETAIL = re.compile(r"snapshot (?P<id>\S+) sha256 (?P<sha256>[0-9a-f]{64})")


def snapshot_detail(snapshot_id: str, sha256: str) -> str:
    """The ``snapshot`` audit entry's detail."""
    return f"snapshot {snapshot_id} sha256 {sha256}"


@dataclass(frozen=True)
class SnapshotCheck:
    cid: str
    snapshot_id: str
    status: str
    "``OK``, ``MODIFIED`` (another hash) or ``MISSING``."


def check_snapshot_files(db: Connection, data_dir: Path) -> list[SnapshotCheck]:
    """Every hashed snapshot entry against its file, in the trail's order."""
    store = SnapshotStore(data_dir)
    rows = db.execute(
        "SELECT consultation_id, detail FROM audit WHERE action = 'snapshot' ORDER BY seq"
    ).fetchall()
    checks = []
    for cid, detail in rows:
        match = _DETAIL.fullmatch(str(detail or ""))
        if cid is None or match is None:
            continue
        try:
            path = store.locate(ConsultationId(cid), match["id"])
            if path is None:
                raise FileNotFoundError(match["id"])
            status = "OK" if _sha256(path) == match["sha256"] else "MODIFIED"
        except ValueError:  # a malformed id or consultation in the entry: it names no file
            status = "MISSING"
        except FileNotFoundError:
            status = "MISSING"
        checks.append(SnapshotCheck(cid, match["id"], status))
    return checks


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
