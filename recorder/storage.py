"""Where a consultation's own files live: ``<data>/consultations/<cid>/`` — the annotation
timeline and the snapshots. Ids arrive in URLs, so their shape is checked before one ever becomes
part of a path."""

from __future__ import annotations

import re
from pathlib import Path

from relay import ConsultationId

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def consultation_dir(data_dir: Path, cid: ConsultationId) -> Path:
    if not _ID.fullmatch(cid):
        raise ValueError("not a consultation id")
    return data_dir / "consultations" / cid
