"""Recorder: one Recording of one consultation — the endoscope video, the clinic's audio and the
surgeon's talk-back, remuxed from the relay's encoded frames into a series of segment files (one
per publisher connection, each a ``LiveSegment`` while it records), with a manifest and index
rows kept current at every boundary.

Everything here runs on the event loop: muxing and disk I/O happen in each segment's writer
thread, manifest and index writes in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from persistence.times import parse_utc_iso, utc_now_iso
from relay import Router
from relay.codecs import VIDEO_CLOCK_RATE

from .config import RecorderConfig
from .consultation import ConsultationInfo
from .index import RecordingIndex
from .integrity import chain_genesis, chain_next
from .manifest import (
    AUDIO_CODEC,
    Manifest,
    RecordingStatus,
    Segment,
    SegmentStatus,
    new_recording_id,
    recording_dir,
    segment_filename,
    write_manifest,
)
from .privacy_spans import PrivacySpans
from .segment import LiveSegment, SegmentProgress
from .writer import CONTAINERS

logger = logging.getLogger(__name__)


class Recorder:
    """One Recording: segments, hash chain, manifest and index rows."""

    def __init__(
        self,
        info: ConsultationInfo,
        data_dir: Path,
        index: RecordingIndex,
        config: RecorderConfig,
        on_write_error: Callable[[Recorder, str], None],
        on_new_connection: Callable[[Recorder], None] = lambda recorder: None,
        resumed: Manifest | None = None,
    ) -> None:
        """A new Recording, or — ``resumed`` — one a previous server process left paused
        (recovery): its segments, hash chain and participants continue."""
        self.id = resumed.recording_id if resumed else new_recording_id()
        self.consultation = info.id
        self.directory = recording_dir(data_dir, self.id)
        self.label = f"consultation:{info.id} recording:{self.id}"
        self._index = index
        self._config = config
        self._on_write_error = on_write_error
        self._on_new_connection = on_new_connection
        self._container = CONTAINERS[info.video_codec]
        self._wall_offset = time.time() - time.monotonic()
        self._live: LiveSegment | None = None
        self._ending = False
        self._seen: set[str] = {p["identity"] for p in resumed.participants} if resumed else set()
        if resumed is not None:
            self.manifest = resumed
            self._chain = resumed.chain_head or chain_genesis(self.id)
            ends = [s.offset_s + s.duration_s for s in resumed.segments]
            self._privacy = PrivacySpans(resumed.out_of_body, max(ends, default=0.0))
            return
        self._privacy = PrivacySpans([], 0.0)
        self._chain = chain_genesis(self.id)
        self.manifest = Manifest(
            recording_id=self.id,
            consultation={"id": info.id, "title": info.title},
            status=RecordingStatus.RECORDING,
            started_at=utc_now_iso(),
            container=self._container.format,
            mime_type=self._container.mime_type,
            video_codec=info.video_codec,
            keyframe_interval_s=config.keyframe_interval_s,
            consent=info.consent,
        )
        assert AUDIO_CODEC == "opus"

    @property
    def segment_open(self) -> bool:
        return self._live is not None

    def progress(self) -> SegmentProgress | None:
        """The open segment's progress (``/metrics``), or None between segments."""
        return self._live.progress() if self._live else None

    @property
    def segment_seq(self) -> int | None:
        return self._live.entry.seq if self._live else None

    @property
    def finished(self) -> bool:
        return self.manifest.status is not RecordingStatus.RECORDING

    async def open(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, mode=0o700, parents=True, exist_ok=False)
        await self._persist()
        logger.info("Recorder(%s) started (%s)", self.label, self.manifest.container)

    async def start_segment(self, router: Router, publisher: str | None) -> Segment:
        """A new segment (the endoscope feed went live): taps now, file on the first keyframe."""
        assert self._live is None, "a segment is already open"
        seq = len(self.manifest.segments) + 1
        entry = Segment(
            seq=seq,
            file=segment_filename(seq, self._container.extension),
            status=SegmentStatus.OPEN,
            started_at=utc_now_iso(),
            publisher=publisher,
        )
        live = LiveSegment(
            entry,
            self.directory / entry.file,
            router,
            self.manifest.video_codec,
            self._config,
            self.label,
            lambda message: self._on_write_error(self, message),
            lambda: self._on_new_connection(self),
        )
        self.manifest.segments.append(entry)
        try:
            await self._persist()  # the index knows the file before it exists
        except BaseException:
            live.abandon()
            self.manifest.segments.pop()
            raise
        live.start()
        self._live = live
        self._privacy.segment_started()
        self._place_spans()
        logger.info("Recorder(%s) segment %d started", self.label, seq)
        return entry

    async def end_segment(self) -> Segment | None:
        """Close the open segment (the feed went offline): finish the file, hash, chain.
        ``segment_open`` stays true until manifest and index say the segment is closed."""
        live = self._live
        if live is None or self._ending:
            return None
        self._ending = True
        try:
            return await self._end(live)
        finally:
            self._live = None
            self._ending = False

    async def _end(self, live: LiveSegment) -> Segment:
        entry = await live.stop(self._wall_offset)
        if entry.sha256 is not None:
            self._chain = chain_next(self._chain, entry.sha256)
            entry.chain = self._chain
        if entry.seq == 1:
            self.manifest.started_at = entry.started_at
        entry.offset_s = self._offset(entry)
        self._privacy.segment_ended(entry.offset_s, entry.duration_s)
        self.manifest.out_of_body = self._privacy.spans(0.0)
        self.manifest.writer_overflows += live.overflows
        await self._persist()
        logger.info(
            "Recorder(%s) segment %d closed: %.1f s, %d frames, %d bytes, dropped %s",
            self.label,
            entry.seq,
            entry.duration_s,
            entry.frames,
            entry.bytes,
            entry.dropped,
        )
        return entry

    async def finish(self, reason: str, status: RecordingStatus = RecordingStatus.COMPLETE) -> None:
        """End the recording: the open segment is closed, the manifest and index say why."""
        if self.finished:
            return
        await self.end_segment()
        if any(s.status is SegmentStatus.INTERRUPTED for s in self.manifest.segments):
            status = RecordingStatus.INTERRUPTED
        ends = [s.ended_at for s in self.manifest.segments if s.ended_at]
        self.manifest.status = status
        self.manifest.stop_reason = reason
        self.manifest.ended_at = ends[-1] if ends else utc_now_iso()
        await self._persist()
        logger.info("Recorder(%s) %s (%s)", self.label, status, reason)

    def note_out_of_body(self, out_of_body: bool, pts: int | None) -> None:
        """The privacy guard's change, dated by relay ``pts`` (None: the feed ended); the
        manifest says so at the next ``save``."""
        live = self._live
        file_t = None
        if live is not None and pts is not None:
            first = live.entry.video_pts_start
            file_t = 0.0 if first is None else max(0.0, (pts - first) / VIDEO_CLOCK_RATE)
        self._privacy.note(out_of_body, file_t)
        self._place_spans()

    async def save(self) -> None:
        """Write manifest and index now (a span began or ended)."""
        if not self.finished:
            await self._persist()

    def _place_spans(self) -> None:
        live = self._live
        self.manifest.out_of_body = self._privacy.spans(self._offset(live.entry) if live else 0.0)

    def _offset(self, entry: Segment) -> float:
        """Where a segment starts on the recording clock (final once it closed)."""
        return round(
            max(0.0, parse_utc_iso(entry.started_at) - parse_utc_iso(self.manifest.started_at)),
            3,
        )

    def note_participants(self, participants: list[dict[str, Any]]) -> None:
        """Remember everyone seen in the consultation while recording (identity, name, role)."""
        for person in participants:
            identity = person.get("identity")
            if not isinstance(identity, str) or identity in self._seen:
                continue
            self._seen.add(identity)
            self.manifest.participants.append(
                {
                    "identity": identity,
                    "name": person.get("name", ""),
                    "role": person.get("role"),
                    "first_seen": utc_now_iso(),
                }
            )

    async def _persist(self) -> None:
        """Manifest first (atomic rename), then the index: recovery trusts the manifest."""
        await asyncio.to_thread(write_manifest, self.directory, self.manifest)
        await self._index.save(self.manifest)
