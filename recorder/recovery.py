"""At start-up: take over what the previous server process left open, without losing or altering
a byte.

Every recording the index still marks ``recording`` was left by a crash (a segment still
``open``) or by a clean shutdown (every segment closed, the recording paused). A segment a crash
left open is turned ``interrupted``: hashed exactly as it is on disk (the hash chain covers the
original), measured (how much media it holds), and — the original kept untouched — stream-copied
into a finalized ``segment-NNN.repaired.<ext>`` whose container has a duration and a seek index (a
WebM cut by a crash has neither).

Then, if its last media is less than ``resumable_s`` (``ENDOLINK_RECORDING_OFFLINE_S``) old, the
recording stays ``recording``: the clinic may still come back and continue it with a new segment
(``Recordings`` waits for the rest of that time). Otherwise it ends here: reason ``crash`` when
this start found a segment open, else ``feed-offline`` (it was paused, by the feed or a shutdown,
and nothing came back in time); status ``interrupted`` when any of its segments was cut by a
crash. Manifest and index are then rewritten to agree.

Blocking (file reads, PyAV): run in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import av

from persistence.files import Sync, move_into_place
from persistence.times import parse_utc_iso, utc_iso

from .index import RecordingRow
from .integrity import chain_genesis, chain_next, sha256_file
from .manifest import (
    MANIFEST,
    Manifest,
    RecordingStatus,
    Repaired,
    Segment,
    SegmentStatus,
    StopReason,
    read_manifest,
    recording_dir,
    repaired_filename,
    write_manifest,
)
from .writer import CONTAINERS, Track

logger = logging.getLogger(__name__)

_FRAME_S = 1 / 30
_OPUS_FRAME_S = 0.02
_REPAIR_OPTIONS: dict[str, dict[str, str]] = {"webm": {}, "mp4": {"movflags": "+faststart"}}


@dataclass
class Probe:
    """What a (possibly truncated) segment file holds, read packet by packet."""

    duration_s: float = 0.0
    packets: list[int] = field(default_factory=lambda: [0, 0, 0])
    video_bytes: int = 0
    dimensions: tuple[int, int] | None = None


def recover_recording(
    data_dir: Path, row: RecordingRow, repair: bool = True, resumable_s: float = 0.0
) -> Manifest:
    """Recover an unfinished recording, closing it unless its last media is younger than
    ``resumable_s``: returns the manifest it wrote (save it to the index)."""
    directory = recording_dir(data_dir, row.id)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (directory / (MANIFEST + ".tmp")).unlink()
    manifest = read_manifest(directory) or _manifest_from_index(row)
    known = {s.seq for s in manifest.segments}
    for missing in (s for s in row.segments if s.seq not in known):
        manifest.segments.append(
            Segment(
                seq=missing.seq,
                file=missing.file,
                status=SegmentStatus(missing.status),
                started_at=missing.started_at,
            )
        )
    manifest.segments.sort(key=lambda s: s.seq)
    chain = chain_genesis(manifest.recording_id)
    crashed = False
    for segment in manifest.segments:
        if segment.status is SegmentStatus.OPEN:
            crashed = True
            _recover_segment(directory, segment, manifest.container, repair)
            if segment.sha256 is not None:
                segment.chain = chain_next(chain, segment.sha256)
        if segment.chain is not None:
            chain = segment.chain
    how = "a crash" if crashed else "a pause"
    if resumable_s > 0 and time.time() - last_media_at(directory, manifest) < resumable_s:
        write_manifest(directory, manifest)
        logger.info(
            "recording %s was paused by %s: %d segment(s), %.1f s; it may still continue",
            manifest.recording_id,
            how,
            len(manifest.segments),
            manifest.duration_s,
        )
        return manifest
    cut = any(s.status is SegmentStatus.INTERRUPTED for s in manifest.segments)
    manifest.status = RecordingStatus.INTERRUPTED if cut else RecordingStatus.COMPLETE
    manifest.stop_reason = str(StopReason.CRASH if crashed else StopReason.FEED_OFFLINE)
    manifest.ended_at = _last_media(manifest)
    write_manifest(directory, manifest)
    logger.info(
        "recording %s was ended by %s: %d segment(s), %.1f s recovered",
        manifest.recording_id,
        how,
        len(manifest.segments),
        manifest.duration_s,
    )
    return manifest


def last_media_at(directory: Path, manifest: Manifest) -> float:
    """Wall-clock time of the recording's last media (its start while it has none). A segment cut
    by a crash lost its last second or so of media with the process: its file's last write is
    the better clock then."""
    written = []
    for segment in manifest.segments:
        with contextlib.suppress(OSError):
            written.append((directory / segment.file).stat().st_mtime)
    return max([parse_utc_iso(_last_media(manifest)), *written])


def _last_media(manifest: Manifest) -> str:
    ends = [s.ended_at for s in manifest.segments if s.ended_at]
    return ends[-1] if ends else manifest.started_at


def _manifest_from_index(row: RecordingRow) -> Manifest:
    """The manifest was never written (crash right at the start): rebuild it from the index."""
    container = next(c for c in CONTAINERS.values() if c.format == row.container)
    return Manifest(
        recording_id=row.id,
        consultation={"id": row.consultation_id, "title": None},
        status=RecordingStatus(row.status),
        started_at=row.started_at,
        container=row.container,
        mime_type=container.mime_type,
        video_codec=row.video_codec,
        keyframe_interval_s=0.0,
        segments=[
            Segment(
                seq=s.seq,
                file=s.file,
                status=SegmentStatus(s.status),
                started_at=s.started_at,
                ended_at=s.ended_at,
                offset_s=s.offset_s,
                duration_s=s.duration_s,
                frames=s.frames,
                bytes=s.bytes,
                sha256=s.sha256,
                chain=s.chain,
            )
            for s in row.segments
        ],
    )


def _recover_segment(directory: Path, segment: Segment, container: str, repair: bool) -> None:
    segment.status = SegmentStatus.INTERRUPTED
    path = directory / segment.file
    if not path.is_file():
        segment.error = "no file: the server stopped before the first keyframe was written"
        segment.ended_at = segment.started_at
        return
    segment.sha256, segment.bytes = sha256_file(path)
    probe = probe_segment(path)
    segment.duration_s = round(probe.duration_s, 3)
    segment.ended_at = utc_iso(parse_utc_iso(segment.started_at) + segment.duration_s)
    segment.frames = probe.packets[Track.VIDEO]
    segment.audio_packets = {t.label: probe.packets[t] for t in (Track.AUDIO, Track.TALKBACK)}
    if probe.dimensions:
        segment.width, segment.height = probe.dimensions
    if segment.duration_s:
        segment.video_kbps = round(probe.video_bytes * 8 / 1000 / segment.duration_s, 1)
    segment.error = "the server stopped while writing this segment"
    if repair and segment.duration_s > 0:
        target = directory / repaired_filename(segment.seq, path.suffix)
        try:
            remux(path, target, container)
        except (av.FFmpegError, OSError, ValueError) as exc:
            logger.warning("recovery: %s could not be repaired: %s", segment.file, exc)
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return
        sha, size = sha256_file(target)
        segment.repaired = Repaired(
            file=target.name,
            sha256=sha,
            bytes=size,
            duration_s=round(probe_segment(target).duration_s, 3),
        )


def _packets(container: av.container.InputContainer):  # type: ignore[no-untyped-def]
    """Demux until the data ends or stops making sense (a crash cut the last cluster)."""
    demux = container.demux()
    while True:
        try:
            packet = next(demux)
        except StopIteration:
            return
        except (av.FFmpegError, ValueError):
            return
        if packet.size == 0 or packet.pts is None or packet.is_corrupt:
            continue  # a frame whose bytes the crash cut off
        yield packet


def probe_segment(path: Path) -> Probe:
    """Count what a segment file holds, tolerating a truncated end."""
    probe = Probe()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, ValueError, OSError):
        return probe
    with container:
        for packet in _packets(container):
            index = packet.stream.index
            if index > Track.TALKBACK:
                continue
            probe.packets[index] += 1
            if packet.duration:
                length = float(packet.duration * packet.time_base)
            else:
                length = _FRAME_S if index == Track.VIDEO else _OPUS_FRAME_S
            probe.duration_s = max(probe.duration_s, float(packet.pts * packet.time_base) + length)
            if index == Track.VIDEO:
                probe.video_bytes += packet.size
        video = container.streams.video[0] if container.streams.video else None
        if video is not None and video.codec_context.width:
            probe.dimensions = (video.codec_context.width, video.codec_context.height)
    return probe


def remux(source: Path, target: Path, container_format: str) -> None:
    """Stream-copy ``source`` into a finalized file (duration, cues / moov); no re-encode."""
    temporary = target.with_name(target.name + ".tmp")
    with av.open(str(source)) as inp:
        out = av.open(
            str(temporary),
            "w",
            format=container_format,
            container_options=_REPAIR_OPTIONS[container_format],
        )
        try:
            streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
            for stream in inp.streams:
                streams[stream.index].metadata.update(stream.metadata)
                streams[stream.index].disposition = stream.disposition
            last: dict[int, int] = {}
            for packet in _packets(inp):
                index = packet.stream.index
                if packet.dts is None or (index in last and packet.dts <= last[index]):
                    continue
                last[index] = packet.dts
                packet.stream = streams[index]
                out.mux(packet)
        finally:
            out.close()
    move_into_place(temporary, target, sync=Sync.FILE)
