"""Snapshots: pictures kept with the consultation. Two kinds: a ``snapshot`` is a PNG of the
annotated endoscope picture a surgeon took; a ``still`` is a JPEG of the clinic's camera at full
resolution, sent in stills mode when the clinic's link cannot carry useful video. Both are
recorded material (a freeze names one, the replay shows them on the recording clock), so they are
stored here, beside the annotation log; the HTTP routes only check who may upload or read.

Files live in ``<data>/consultations/<cid>/snapshots/`` as ``<id>.png`` (or ``<id>.jpg``) plus
``<id>.json`` (who, when, kind: what lists it). Ids are made here, and a file name is only ever
built from a well-formed id. Every async method does its disk work in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from persistence.files import Sync, write_bytes_atomic, write_json_atomic
from persistence.times import utc_iso, utc_now_iso
from relay import ConsultationId

from .storage import check_free_space, consultation_dir

logger = logging.getLogger(__name__)

SNAPSHOT_ID = re.compile(r"[A-Za-z0-9_-]{16}")
MAX_SNAPSHOTS = 500
"Per consultation and kind: bounds the disk a consultation can fill (500 × 8 MiB)."
MAX_STILLS = 1000
"""Stills per consultation, counted apart from snapshots (a stills mode sends one every ~4 s, so
a shared limit would soon refuse the surgeon's snapshot button): ~70 min of stills, and at the
~0.3 MiB of a 1080p still ~300 MiB; the disk floor still applies."""
MAX_SIDE = 8192
"Pixels, each way: an 8 MiB PNG can declare 60000 × 60000 (3.6 GB once a browser decodes it)."
MAX_DECODED_BYTES = 64 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SNAPSHOT = "snapshot"
STILL = "still"
SUFFIXES = {SNAPSHOT: ".png", STILL: ".jpg"}
"The file of each kind: a snapshot is a PNG, a still a JPEG."
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
"The start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size."
_JPEG_DECODED = {0xC0, 0xC1, 0xC2}
"""The frames a still may have: baseline, extended and progressive Huffman, what a browser's
``canvas.toBlob`` makes and every decoder (Pillow in the DICOM export) reads."""
JPEG_HEADER_BYTES = 256 * 1024
JPEG_HEADER_SEGMENTS = 64
"""How far the header walk goes before the frame header: a browser's JPEG has it within a few
segments and KiB; the walk is Python: an 8 MiB body of fill bytes must not be walked to its end."""
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"Samples per pixel of each PNG colour type."


@dataclass(frozen=True)
class Snapshot:
    id: str
    by: str
    created_at: str
    kind: str = SNAPSHOT
    "``snapshot`` (PNG) or ``still`` (JPEG); metadata written before stills existed has none."

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class BadImage(ValueError):
    """Not a PNG (JPEG) whose header can be read (HTTP 400)."""


class UnsupportedImage(ValueError):
    """A JPEG of a kind stills are not (lossless, arithmetic, 12-bit, CMYK: HTTP 415)."""


class ImageTooLarge(ValueError):
    """An image declaring more pixels than a snapshot may have (HTTP 413)."""


def check_png(data: bytes) -> tuple[int, int]:
    """The width and height a PNG declares in its IHDR, read without decoding anything; raises
    ``BadImage`` or ``ImageTooLarge`` (beyond ``MAX_SIDE`` or ``MAX_DECODED_BYTES``)."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 26:
        raise BadImage("body is not a PNG image")
    length, width, height, depth, colour = struct.unpack(">I4xIIBB", data[8:26])
    channels = _CHANNELS.get(colour)
    if length != 13 or channels is None or depth not in (1, 2, 4, 8, 16) or not width or not height:
        raise BadImage("the PNG header is not valid")
    _check_size(width, height, width * height * channels * depth // 8)
    return width, height


def check_jpeg(data: bytes) -> tuple[int, int]:
    """The width and height a JPEG declares in its start-of-frame segment, read by walking the
    marker segments without decoding, at most ``JPEG_HEADER_SEGMENTS`` segments within the first
    ``JPEG_HEADER_BYTES``; the file must end with its end-of-image marker (a cut upload is
    refused). Raises ``BadImage``, ``UnsupportedImage`` or ``ImageTooLarge``."""
    if not data.startswith(b"\xff\xd8\xff") or not data.endswith(b"\xff\xd9"):
        raise BadImage("body is not a complete JPEG image")
    at, end = 2, min(len(data), JPEG_HEADER_BYTES)
    for _ in range(JPEG_HEADER_SEGMENTS):
        if at + 4 > end or data[at] != 0xFF:
            break
        at += len(data[at:end]) - len(data[at:end].lstrip(b"\xff")) - 1  # fill bytes
        if at + 4 > end:
            break
        marker = data[at + 1]
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _JPEG_FRAMES:
            if length < 8 or at + 10 > len(data):
                break
            depth, height, width, channels = struct.unpack(">BHHB", data[at + 4 : at + 10])
            if not width or not height:
                break
            if marker not in _JPEG_DECODED or depth != 8 or channels not in (1, 3):
                raise UnsupportedImage(
                    "stills are 8-bit baseline or progressive JPEGs in colour or grey, as a "
                    "browser makes them"
                )
            _check_size(width, height, width * height * channels)
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header
            break
        at += 2 + length
    raise BadImage("the JPEG header is not valid")


def _check_size(width: int, height: int, decoded: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE or decoded > MAX_DECODED_BYTES:
        raise ImageTooLarge(
            f"the picture is {width} × {height} pixels: snapshots are at most {MAX_SIDE} pixels "
            f"each way and {MAX_DECODED_BYTES // (1024 * 1024)} MiB once decoded"
        )


class TooManySnapshots(Exception):
    def __init__(self, kind: str, limit: int) -> None:
        super().__init__(f"a consultation keeps at most {limit} {kind}s")


class SnapshotStore:
    """The snapshots of every consultation under one data directory; new ones only while the
    disk keeps ``min_free_mb`` MiB free (``DiskFull``)."""

    def __init__(self, data_dir: Path, min_free_mb: int = 0) -> None:
        self._data_dir = data_dir
        self._min_free_mb = min_free_mb

    def directory(self, cid: ConsultationId) -> Path:
        return consultation_dir(self._data_dir, cid) / "snapshots"

    def path(self, cid: ConsultationId, snapshot_id: str, kind: str = SNAPSHOT) -> Path:
        """The image of a snapshot of ``kind`` (it may not exist); a malformed id is a
        ValueError."""
        if not SNAPSHOT_ID.fullmatch(snapshot_id):
            raise ValueError("not a snapshot id")
        return self.directory(cid) / f"{snapshot_id}{SUFFIXES[kind]}"

    def locate(self, cid: ConsultationId, snapshot_id: str) -> Path | None:
        """The stored image of this id, whichever kind it is (blocking: for worker threads)."""
        for kind in SUFFIXES:
            path = self.path(cid, snapshot_id, kind)
            if path.is_file():
                return path
        return None

    async def kind(self, cid: ConsultationId, snapshot_id: str) -> str | None:
        """For ``freeze`` and the image route: the kind of the stored snapshot this id names,
        or None."""
        path = await asyncio.to_thread(self.locate, cid, snapshot_id)
        if path is None:
            return None
        return next(kind for kind, suffix in SUFFIXES.items() if path.suffix == suffix)

    async def add(
        self,
        cid: ConsultationId,
        by: str,
        image: bytes,
        at: float | None = None,
        kind: str = SNAPSHOT,
    ) -> Snapshot:
        """Store a new snapshot (PNG) or still (JPEG) taken by ``by`` (now, or at Unix time
        ``at``). Raises ``TooManySnapshots`` when the consultation has ``MAX_SNAPSHOTS`` of this
        kind already (stills: ``MAX_STILLS``), ``DiskFull`` below the floor."""
        snapshot = Snapshot(
            secrets.token_urlsafe(12), by, utc_now_iso() if at is None else utc_iso(at), kind
        )
        await asyncio.to_thread(self._write, cid, snapshot, image)
        return snapshot

    def _write(self, cid: ConsultationId, snapshot: Snapshot, image: bytes) -> None:
        """Image first, then its metadata (which is what lists it), each written atomically."""
        directory = self.directory(cid)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_free_space(directory, self._min_free_mb)
        limit = MAX_STILLS if snapshot.kind == STILL else MAX_SNAPSHOTS
        if sum(1 for _ in directory.glob(f"*{SUFFIXES[snapshot.kind]}")) >= limit:
            raise TooManySnapshots(snapshot.kind, limit)
        path = self.path(cid, snapshot.id, snapshot.kind)
        write_bytes_atomic(path, image, suffix=".partial", sync=Sync.FILE)
        write_json_atomic(
            directory / f"{snapshot.id}.json", asdict(snapshot), suffix=".partial", sync=Sync.FILE
        )

    def _read(self, cid: ConsultationId) -> list[Snapshot]:
        snapshots = []
        for path in self.directory(cid).glob("*.json"):
            try:
                snapshots.append(Snapshot(**json.loads(path.read_bytes())))
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("Snapshot metadata %s unreadable: %s", path.name, exc)
        return sorted(snapshots, key=lambda s: s.created_at)

    # Defined last: a method named ``list`` shadows the builtin in later annotations.
    async def list(self, cid: ConsultationId) -> list[Snapshot]:
        """The consultation's snapshots, oldest first (unreadable metadata is skipped)."""
        return await asyncio.to_thread(self._read, cid)
