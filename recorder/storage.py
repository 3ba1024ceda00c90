"""Where a consultation's own files live: ``<data>/consultations/<cid>/`` — the annotation
timeline and the snapshots. Ids arrive in URLs, so their shape is checked before one ever becomes
part of a path. And the free-disk floor new snapshots and exports must leave (recordings keep
their own, checked every second: ``recordings.py``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from relay import ConsultationId

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def consultation_dir(data_dir: Path, cid: ConsultationId) -> Path:
    if not _ID.fullmatch(cid):
        raise ValueError("not a consultation id")
    return data_dir / "consultations" / cid


class DiskFull(Exception):
    """Writing this would take the data dir below its free-space floor (HTTP 507)."""


def check_free_space(directory: Path, min_free_mb: int) -> None:
    """Raise ``DiskFull`` when ``directory``'s file system has less than ``min_free_mb`` MiB
    free (blocking: a ``statvfs``)."""
    free_mb = shutil.disk_usage(directory).free // (1024 * 1024)
    if free_mb < min_free_mb:
        raise DiskFull(
            f"the server's disk is nearly full ({free_mb} MiB free, {min_free_mb} MiB are kept "
            "for recordings): ask the administrator to free space"
        )
