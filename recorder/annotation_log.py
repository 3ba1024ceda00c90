"""The annotation timeline of a consultation: append-only JSON lines, one ``LogEntry`` per accepted
op, so the replay can show every mark in sync with the recording (``media_pts``).

``AnnotationLog.append`` never blocks the event loop: entries go to a bounded queue, drained by
one writer task that does the file work in a thread. Each line is flushed as it is written (a
crash of the process loses nothing already handed over); fsync runs at most once a second, and a
second after the last write, so a power cut loses at most about a second. An idle file is closed
and reopened on the next entry, so a server that has seen many consultations holds no stale fds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from relay import ConsultationId

from .log_entry import LogEntry, LogOp
from .storage import consultation_dir

logger = logging.getLogger(__name__)

FILENAME = "annotations.jsonl"
QUEUE_ENTRIES = 1024
"Entries waiting for the disk before new ones are dropped (with a warning)."
FSYNC_INTERVAL_S = 1.0
IDLE_CLOSE_S = 30.0


class AnnotationLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.dropped = 0
        self._queue: asyncio.Queue[LogEntry | None] = asyncio.Queue(QUEUE_ENTRIES)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        # Touched only by the writer's thread calls, which run one at a time.
        self._file: BinaryIO | None = None
        self._dirty = False
        self._synced_at = 0.0

    def append(self, entry: LogEntry) -> None:
        """Queue one entry; never blocks, never raises for a full disk queue."""
        if self._closed:
            return
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_entries())
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning("AnnotationLog(%s) disk is behind: entry dropped", self.path.parent.name)

    async def close(self) -> None:
        """Write everything queued, fsync and close."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer

    async def _write_entries(self) -> None:
        while True:
            if self._dirty:
                timeout: float | None = FSYNC_INTERVAL_S
            else:
                timeout = IDLE_CLOSE_S if self._file is not None else None
            try:
                entry = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                await self._in_thread(self._sync, not self._dirty)
                continue
            batch = [entry]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            lines = [json.dumps(e.to_json(), separators=(",", ":")) for e in batch if e is not None]
            if not await self._in_thread(self._write, lines):
                self.dropped += len(lines)
            if None in batch:
                await self._in_thread(self._sync, True)
                return

    async def _in_thread(self, work: Callable[[Any], None], arg: Any) -> bool:
        """Run file work off the loop; a disk error is logged, never kills the writer."""
        try:
            await asyncio.to_thread(work, arg)
            return True
        except OSError as exc:
            logger.error("AnnotationLog(%s) disk error: %s", self.path.parent.name, exc)
            return False

    def _write(self, lines: list[str]) -> None:
        if self._file is None:
            self._file = _open_for_append(self.path)
        for line in lines:
            self._file.write(line.encode() + b"\n")
            self._file.flush()
        if lines:
            self._dirty = True
        if time.monotonic() - self._synced_at >= FSYNC_INTERVAL_S:
            self._sync(close=False)

    def _sync(self, close: bool) -> None:
        if self._file is None:
            return
        if self._dirty:
            os.fsync(self._file.fileno())
            self._dirty = False
            self._synced_at = time.monotonic()
        if close:
            self._file.close()
            self._file = None


def _open_for_append(path: Path) -> BinaryIO:
    """Open the log; a torn last line (the process died mid-write) is ended first, so it costs
    only itself, not the next entry too."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    file = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "ab+")
    if file.tell() > 0:
        file.seek(-1, os.SEEK_END)
        if file.read(1) != b"\n":
            file.write(b"\n")
    return file


class AnnotationLogs:
    """One AnnotationLog per consultation, made on first use, all closed at shutdown."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._logs: dict[str, AnnotationLog] = {}

    def get(self, cid: ConsultationId) -> AnnotationLog:
        log = self._logs.get(cid)
        if log is None:
            log = self._logs[cid] = AnnotationLog(consultation_dir(self._data_dir, cid) / FILENAME)
        return log

    async def close(self) -> None:
        logs, self._logs = list(self._logs.values()), {}
        await asyncio.gather(*(log.close() for log in logs))


def read_annotation_log(path: Path, only: LogOp | None = None) -> list[LogEntry]:
    """Every entry in order (blocking: call it in a thread). A torn last line — the process died
    mid-write — is skipped, and so is any line that is no entry; a missing file is an empty
    timeline. ``only``: entries of that op alone (the chat history skips the pen strokes' lines
    without parsing them: a line without the quoted op name cannot be one)."""
    marker = f'"{only}"' if only is not None else ""
    with contextlib.suppress(FileNotFoundError), path.open(encoding="utf-8") as file:
        entries = []
        for line in file:
            if marker not in line:
                continue
            with contextlib.suppress(ValueError):
                entry = LogEntry.from_json(json.loads(line))
                if entry is not None and (only is None or entry.kind is only):
                    entries.append(entry)
        return entries
    return []
