"""Recordings: the server's recording manager — when to record, and what participants are told.

It reacts to the relay's feed events. The endoscope feed going live starts a Recording (if the
consultation's switch is on and the disk has space) or, within ``offline_s`` of it going offline,
continues the current one with a new segment; the feed staying offline longer ends it. Server
shutdown finishes every open segment cleanly but leaves its recording paused; start-up recovers
what a crash or a shutdown left open and keeps waiting for the feed for the rest of ``offline_s``
(counted from the last media), so a clinic that comes back after a server restart continues the
same recording.
Free space is checked every second: below ``min_free_mb`` recording stops cleanly.

Every change is announced through ``on_event`` (the app broadcasts it to the consultation's
WebSocket): ``recording`` (a segment is being written), ``paused`` (the feed is offline, the
recording waits for it), ``stopped`` (ended cleanly; ``reason``), ``interrupted`` (the disk failed).
Work for one consultation runs strictly in order (one lock each); feed events never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from relay import ConsultationId, FeedEvent, FeedName, FeedState, Router, RouterClosed
from relay.privacy import PrivacyChange

from .config import RecorderConfig
from .consultation import ConsultationInfo
from .index import RecordingIndex, RecordingRow
from .manifest import Manifest, RecordingStatus, StopReason, recordings_root
from .recorder import Recorder
from .recovery import last_media_at, recover_recording

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


def disk_free_bytes(path: Path) -> int:
    """Free space for the recordings (a seam for tests)."""
    return shutil.disk_usage(path).free


class RecordingState(StrEnum):
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class RecordingEvent:
    cid: ConsultationId
    state: RecordingState
    recording_id: str | None
    reason: str | None = None
    segment: int | None = None


class Recordings:
    def __init__(
        self,
        data_dir: Path,
        index: RecordingIndex,
        config: RecorderConfig,
        consultation: Callable[[ConsultationId], Awaitable[ConsultationInfo | None]],
        router: Callable[[ConsultationId], Router | None],
        participants: Callable[[ConsultationId], list[dict[str, Any]]] = lambda cid: [],
    ) -> None:
        self.data_dir = data_dir
        self.root = recordings_root(data_dir)
        self.index = index
        self.config = config
        self.on_event: Callable[[RecordingEvent], None] = lambda event: None
        self.recoverable: Callable[[RecordingRow], Awaitable[bool]] = _always
        """Whether an unfinished recording is this server's to recover. Always, alone; in a
        cluster (an index several nodes share) only one whose files are here and whose
        consultation no other node serves: another node's live recording is not touched."""
        self._consultation = consultation
        self._router = router
        self._participants = participants
        self._active: dict[ConsultationId, Recorder] = {}
        self._states: dict[ConsultationId, RecordingEvent] = {}
        self._outside: set[ConsultationId] = set()
        "Consultations whose camera the privacy guard last saw outside the body."
        self._locks: dict[ConsultationId, asyncio.Lock] = {}
        self._expiry: dict[ConsultationId, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover what a crash or a shutdown left open (still resumable ones wait for their
        feed again), then watch the disk."""
        # Patient video: readable by the server's user only.
        await asyncio.to_thread(self.root.mkdir, mode=0o700, parents=True, exist_ok=True)
        for row in sorted(await self.index.unfinished(), key=lambda r: r.started_at):
            if await self.recoverable(row):
                await self._recover(row)
        self._watch = asyncio.ensure_future(self._watch_disk())

    async def adopt(self, cid: ConsultationId) -> None:
        """This node now serves ``cid`` in place of another node (one that died, or left). A
        recording of it left unfinished there goes on here — as a new segment after a gap, in
        the same recording — when its files are here too (recordings on storage the nodes
        share); otherwise it is that node's to recover when it starts again."""
        if self._closed:
            return
        rows = [r for r in await self.index.unfinished() if r.consultation_id == cid]
        for row in sorted(rows, key=lambda r: r.started_at):
            if cid in self._active:
                return
            if await self.recoverable(row):
                await self._locked(cid, self._recover(row))

    async def _recover(self, row: RecordingRow) -> None:
        """Close what a crash left open; a recording whose feed may still come back resumes."""
        try:
            manifest = await asyncio.to_thread(
                recover_recording, self.data_dir, row, self.config.repair, self.config.offline_s
            )
        except Exception:
            logger.exception("recovery of recording %s failed", row.id)
            return
        await self.index.save(manifest)
        if manifest.status is RecordingStatus.RECORDING:
            await self._resume(manifest)

    async def _resume(self, manifest: Manifest) -> None:
        """A recording the previous server process left paused waits for its feed again."""
        cid = ConsultationId(manifest.consultation["id"])
        info = await self._consultation(cid)
        recorder = Recorder(
            info or ConsultationInfo(cid, "", manifest.video_codec, False, manifest.consent),
            self.data_dir,
            self.index,
            self.config,
            self._write_failed,
            self._new_connection,
            resumed=manifest,
        )
        if info is None or not info.recording_enabled or cid in self._active:
            await recorder.finish(str(StopReason.DISABLED if info else StopReason.FEED_OFFLINE))
            return
        self._active[cid] = recorder
        last = await asyncio.to_thread(last_media_at, recorder.directory, manifest)
        silent_s = time.time() - last
        self._pause(cid, recorder, self.config.offline_s - silent_s)

    async def close(self) -> None:
        """Server shutdown: every open segment is finished (file complete, hashed, indexed); its
        recording stays paused, for the next start to continue or end (``start``)."""
        self._closed = True
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
        if self._watch is not None:
            self._watch.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for cid in list(self._active):
            await self._locked(cid, self._suspend(cid))

    async def _suspend(self, cid: ConsultationId) -> None:
        recorder = self._active.pop(cid, None)
        if recorder is not None:
            await recorder.end_segment()
            logger.info("Recorder(%s) paused by the shutdown", recorder.label)

    # -- what the app calls ------------------------------------------------------------------

    def on_feed_event(self, event: FeedEvent) -> None:
        """From ``Relay.on_feed_event``: never blocks, the work is queued per consultation."""
        if self._closed or event.feed is not FeedName.ENDOSCOPE:
            return
        if event.state is FeedState.LIVE:
            self._spawn(event.cid, self._feed_live(event.cid, event.identity))
        else:
            self._spawn(event.cid, self._feed_offline(event.cid))

    async def set_enabled(self, cid: ConsultationId, enabled: bool) -> None:
        """The consultation's switch changed (already stored): stop now, or start if live."""
        if self._closed:
            return
        if enabled:
            router = self._router(cid)
            feed = router.feeds[FeedName.ENDOSCOPE] if router else None
            if feed is not None and feed.state is FeedState.LIVE:
                await self._locked(cid, self._feed_live(cid, feed.identity))
        else:
            await self._locked(cid, self._stop(cid, StopReason.DISABLED))

    def on_privacy(self, change: PrivacyChange) -> None:
        """From the privacy guard: the camera left or re-entered the body (relay pts); the
        recording's manifest gets the span at once."""
        if change.out_of_body:
            self._outside.add(change.cid)
        else:
            self._outside.discard(change.cid)
        recorder = self._active.get(change.cid)
        if self._closed or recorder is None:
            return
        recorder.note_out_of_body(change.out_of_body, change.pts)
        self._spawn(change.cid, recorder.save())

    def state(self, cid: ConsultationId) -> RecordingEvent:
        """The latest event of a consultation (for pages that join later)."""
        return self._states.get(cid) or RecordingEvent(cid, RecordingState.STOPPED, None)

    def active(self, cid: ConsultationId) -> Recorder | None:
        return self._active.get(cid)

    # -- reactions ---------------------------------------------------------------------------

    async def _feed_live(self, cid: ConsultationId, publisher: str | None) -> None:
        router = self._router(cid)
        if router is None or router.feeds[FeedName.ENDOSCOPE].state is not FeedState.LIVE:
            return  # offline again before we got here
        recorder = self._active.get(cid)
        if recorder is None:
            recorder = await self._new_recorder(cid)
            if recorder is None:
                return
        expiry = self._expiry.pop(cid, None)
        if expiry is not None:
            expiry.cancel()
        if recorder.segment_open:
            await recorder.end_segment()  # the publisher was replaced without an offline event
        recorder.note_out_of_body(cid in self._outside, None)
        try:
            segment = await recorder.start_segment(router, publisher)
        except RouterClosed:
            await self._suspend(cid)  # the server is shutting down
            return
        recorder.note_participants(self._participants(cid))
        self._announce(cid, RecordingState.RECORDING, recorder.id, segment=segment.seq)

    async def _new_recorder(self, cid: ConsultationId) -> Recorder | None:
        info = await self._consultation(cid)
        if info is None or not info.recording_enabled:
            logger.info("consultation %s is live, recording is switched off", cid)
            return None
        if await self.low_disk():
            logger.warning("consultation %s is live but the disk is nearly full: no recording", cid)
            self._announce(cid, RecordingState.STOPPED, None, reason=str(StopReason.LOW_DISK))
            return None
        recorder = Recorder(
            info,
            self.data_dir,
            self.index,
            self.config,
            self._write_failed,
            self._new_connection,
        )
        await recorder.open()
        self._active[cid] = recorder
        return recorder

    async def _feed_offline(self, cid: ConsultationId) -> None:
        recorder = self._active.get(cid)
        if recorder is None:
            return
        if recorder.segment_open:
            await recorder.end_segment()
        self._pause(cid, recorder)

    def _pause(self, cid: ConsultationId, recorder: Recorder, wait_s: float | None = None) -> None:
        """No segment open: wait ``offline_s`` (or ``wait_s``) for the feed to come back."""
        if cid in self._expiry:
            return
        self._announce(cid, RecordingState.PAUSED, recorder.id)
        loop = asyncio.get_running_loop()
        self._expiry[cid] = loop.call_later(
            self.config.offline_s if wait_s is None else max(0.0, wait_s),
            lambda: self._spawn(cid, self._expire(cid, recorder)),
        )

    async def _expire(self, cid: ConsultationId, recorder: Recorder) -> None:
        self._expiry.pop(cid, None)
        if self._active.get(cid) is recorder and not recorder.segment_open:
            await self._stop(cid, StopReason.FEED_OFFLINE)

    async def _stop(
        self,
        cid: ConsultationId,
        reason: StopReason,
        status: RecordingStatus = RecordingStatus.COMPLETE,
    ) -> None:
        recorder = self._active.pop(cid, None)
        expiry = self._expiry.pop(cid, None)
        if expiry is not None:
            expiry.cancel()
        if recorder is None:
            return
        recorder.note_participants(self._participants(cid))
        await recorder.finish(str(reason), status)
        state = (
            RecordingState.INTERRUPTED
            if recorder.manifest.status is RecordingStatus.INTERRUPTED
            else RecordingState.STOPPED
        )
        self._announce(cid, state, recorder.id, reason=str(reason))

    def _write_failed(self, recorder: Recorder, message: str) -> None:
        """A writer thread hit a disk error: end this recording as interrupted."""
        if self._active.get(recorder.consultation) is recorder:
            cid = recorder.consultation
            self._spawn(cid, self._stop(cid, StopReason.WRITE_ERROR, RecordingStatus.INTERRUPTED))

    def _new_connection(self, recorder: Recorder) -> None:
        """The clinic replaced its connection while the feed stayed live: next segment."""
        if self._active.get(recorder.consultation) is recorder:
            self._spawn(recorder.consultation, self._next_segment(recorder))

    async def _next_segment(self, recorder: Recorder) -> None:
        cid = recorder.consultation
        if self._active.get(cid) is not recorder or not recorder.segment_open:
            return
        await recorder.end_segment()
        router = self._router(cid)
        publisher = router.feeds[FeedName.ENDOSCOPE].identity if router else None
        await self._feed_live(cid, publisher)
        if not recorder.segment_open and self._active.get(cid) is recorder:
            self._pause(cid, recorder)  # the new connection is already gone too

    async def _watch_disk(self) -> None:
        while True:
            await asyncio.sleep(self.config.disk_check_interval_s)
            if not self._active:
                continue
            for cid, recorder in list(self._active.items()):
                recorder.note_participants(self._participants(cid))
            if await self.low_disk():
                for cid in list(self._active):
                    logger.warning("free disk space below the floor: recording of %s stops", cid)
                    self._spawn(cid, self._stop(cid, StopReason.LOW_DISK))

    async def low_disk(self) -> bool:
        """Below the free-space floor (or unknown): no recording starts; ``/readyz`` says so."""
        try:
            free = await asyncio.to_thread(disk_free_bytes, self.root)
        except OSError:
            return True
        return free < self.config.min_free_mb * MIB

    # -- plumbing ----------------------------------------------------------------------------

    def _announce(
        self,
        cid: ConsultationId,
        state: RecordingState,
        recording_id: str | None,
        reason: str | None = None,
        segment: int | None = None,
    ) -> None:
        event = RecordingEvent(cid, state, recording_id, reason, segment)
        self._states[cid] = event
        try:
            self.on_event(event)
        except Exception:
            logger.exception("recording event handler failed")

    def _spawn(self, cid: ConsultationId, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._locked(cid, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _locked(self, cid: ConsultationId, work: Coroutine[Any, Any, None]) -> None:
        lock = self._locks.setdefault(cid, asyncio.Lock())
        async with lock:
            try:
                await work
            except Exception:
                logger.exception("recording work for consultation %s failed", cid)


async def _always(row: RecordingRow) -> bool:
    return True
