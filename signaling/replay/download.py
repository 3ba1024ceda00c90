"""Download of a recording as it was recorded: the original file of a one-segment recording;
otherwise a zip (stored, not compressed: media does not compress) of ``manifest.json`` and every
segment in order, each recovery-made ``.repaired`` copy after its original. The zip is written in
a thread and streamed in bounded chunks, so a large recording never sits in memory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import shutil
import threading
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from recorder.index import RecordingRow
from recorder.library import RecordingLibrary
from signaling.db.audit import AuditAction
from signaling.keys import REPLAY
from signaling.replay import audit
from signaling.replay.access import authorised
from signaling.replay.media import MIME_TYPES

logger = logging.getLogger(__name__)

ZIP_CHUNK = 1 << 20
ZIP_CHUNKS_IN_FLIGHT = 8


def attachment_headers(content_type: str, filename: str) -> dict[str, str]:
    """A private download: saved under ``filename``, never cached, never sniffed."""
    return {
        hdrs.CONTENT_TYPE: content_type,
        hdrs.CONTENT_DISPOSITION: f'attachment; filename="{filename}"',
        hdrs.CACHE_CONTROL: "private, no-store",
        "X-Content-Type-Options": "nosniff",
    }


@dataclass(frozen=True)
class Download:
    """What ``GET .../download`` sends: one original file, or a zip of ``entries``."""

    content_type: str
    filename: str
    entries: list[tuple[str, Path]]

    @property
    def zipped(self) -> bool:
        return self.content_type == "application/zip"


async def download_of(library: RecordingLibrary, row: RecordingRow) -> Download:
    files = await library.originals(row)
    if len(files) == 1:
        mime_type, filename = MIME_TYPES[row.container], f"endolink-{row.id}{files[0].suffix}"
        return Download(mime_type, filename, [(files[0].name, files[0])])
    manifest = library.manifest_file(row)
    entries = [(manifest.name, manifest)] + [(p.name, p) for p in files]
    return Download("application/zip", f"endolink-{row.id}.zip", entries)


def digest(download: Download) -> tuple[bytes, int]:
    """SHA-1 and length of exactly the bytes the download sends (the zip is deterministic: its
    entries carry the files' modification times). Blocking: reads every byte; run in a thread."""
    sha1 = hashlib.sha1(usedforsecurity=False)
    counter = _Hashing(sha1)
    if download.zipped:
        _write_zip(counter, download.entries)
    else:
        with download.entries[0][1].open("rb") as source:
            while chunk := source.read(ZIP_CHUNK):
                counter.write(chunk)
    return sha1.digest(), counter.size


async def download(request: web.Request) -> web.StreamResponse:
    grant, row = await authorised(request)
    sent = await download_of(request.app[REPLAY].library, row)
    names = [name for name, _ in sent.entries[1:]] if sent.zipped else [sent.entries[0][0]]
    await audit.record(request, grant, row, AuditAction.DOWNLOAD, ", ".join(names))
    if not sent.zipped:
        headers = attachment_headers(sent.content_type, sent.filename)
        return web.FileResponse(sent.entries[0][1], headers=headers)
    return await _stream_zip(request, sent.filename, sent.entries)


class _Hashing(io.RawIOBase):
    """A write-only sink that only hashes and counts."""

    def __init__(self, sha1: Any) -> None:
        self._sha1 = sha1
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sha1.update(data)
        self.size += len(data)
        return len(data)


class _ChunkWriter(io.RawIOBase):
    """A write-only, unseekable file handing its bytes to the event loop in bounded chunks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]):
        self._loop = loop
        self._queue = queue
        self._buffer = bytearray()
        self.slots = threading.Semaphore(ZIP_CHUNKS_IN_FLIGHT)
        self.aborted = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.aborted:
            raise OSError("the client went away")
        self._buffer += data
        if len(self._buffer) >= ZIP_CHUNK:
            self._hand_over()
        return len(data)

    def _hand_over(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self.slots.acquire()
            if self.aborted:
                raise OSError("the client went away")
            self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)

    def finish(self) -> None:
        self._hand_over()


async def _stream_zip(
    request: web.Request, filename: str, entries: list[tuple[str, Path]]
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    writer = _ChunkWriter(loop, queue)

    def produce() -> None:
        try:
            _write_zip(writer, entries)
            writer.finish()
        except OSError as exc:
            if not writer.aborted:
                logger.warning("zip of %s failed: %s", filename, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    response = web.StreamResponse(headers=attachment_headers("application/zip", filename))
    await response.prepare(request)
    thread = threading.Thread(target=produce, name=f"zip {filename}", daemon=True)
    thread.start()
    try:
        while (chunk := await queue.get()) is not None:
            await response.write(chunk)
            writer.slots.release()
    finally:
        writer.aborted = True
        for _ in range(ZIP_CHUNKS_IN_FLIGHT + 1):
            writer.slots.release()  # unblock the producer so it sees ``aborted`` and stops
    await response.write_eof()
    return response


def _write_zip(sink: io.RawIOBase, entries: list[tuple[str, Path]]) -> None:
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, path in entries:
            info = zipfile.ZipInfo(name, _zip_time(path))
            with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as out:
                shutil.copyfileobj(source, out, ZIP_CHUNK)


def _zip_time(path: Path) -> tuple[int, int, int, int, int, int]:
    with contextlib.suppress(OSError):
        at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        if at.year >= 1980:
            return (at.year, at.month, at.day, at.hour, at.minute, at.second)
    return (1980, 1, 1, 0, 0, 0)
