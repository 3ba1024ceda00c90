"""The recording library, the one read side the web edge asks: which file of a segment plays
(the repaired copy first), derived files made once, the originals to download, snapshots and
marks on the recording clock, the integrity cache, and export jobs by id."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from recorder.index import RecordingIndex, RecordingRow
from recorder.library import RecordingLibrary, Unavailable, playable_file
from recorder.snapshots import SnapshotStore
from signaling.db.store import ConsultationStore
from tests.postgres import BACKENDS, records_target
from tests.replay_support import Made, at, make_recording, stroke, write_log


@dataclass
class Shelf:
    data: Path
    library: RecordingLibrary
    made: Made
    row: RecordingRow
    cid: str


@pytest.fixture(params=BACKENDS)
async def shelf(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shelf]:
    """A recording's files in the data dir, its rows in the SQLite file or in PostgreSQL."""
    data = tmp_path / "data"
    records = records_target(request, tmp_path)
    store = ConsultationStore(records)
    cid = (await store.create("library", "VP8", consent_by="Dr. A", recorded_by="t")).id
    await store.close()
    index = RecordingIndex(records)
    library = RecordingLibrary(data, index)
    try:
        made = await make_recording(data, index, cid, segments=(1.0, 1.0))
        yield Shelf(data, library, made, await library.recording(made.id), cid)
    finally:
        await library.close()
        await index.close()


def repaired(shelf: Shelf, seq: int = 1) -> RecordingRow:
    """The row as recovery leaves it: segment ``seq`` has a ``.repaired`` copy beside it."""
    name = f"segment-{seq:03d}.repaired.webm"
    shutil.copy(shelf.made.segment_path(seq), shelf.made.directory / name)
    segments = tuple(
        replace(s, repaired_file=name) if s.seq == seq else s for s in shelf.row.segments
    )
    return replace(shelf.row, segments=segments)


async def test_the_repaired_copy_plays_the_original_is_downloaded(shelf: Shelf) -> None:
    row = repaired(shelf)
    directory = shelf.made.directory
    assert await shelf.library.segment_file(row, 1) == directory / "segment-001.repaired.webm"
    assert await shelf.library.segment_file(row, 2) == directory / "segment-002.webm"
    assert [p.name for p in await shelf.library.originals(row)] == [
        "segment-001.webm",
        "segment-001.repaired.webm",
        "segment-002.webm",
    ]
    (directory / "segment-001.repaired.webm").unlink()  # named but gone: the original plays
    assert playable_file(directory, row.segments[0]) == directory / "segment-001.webm"


async def test_a_damaged_row_never_becomes_a_path_elsewhere(shelf: Shelf) -> None:
    bad = replace(shelf.row.segments[0], file="../../manifest.json", repaired_file="/etc/passwd")
    assert playable_file(shelf.made.directory, bad) is None
    row = replace(shelf.row, segments=(bad,))
    with pytest.raises(Unavailable, match="no file"):
        await shelf.library.segment_file(row, 1)
    with pytest.raises(Unavailable, match="no media file"):
        await shelf.library.originals(row)


async def test_unknown_recordings_and_segments_are_unavailable(shelf: Shelf) -> None:
    with pytest.raises(Unavailable, match="unknown recording"):
        await shelf.library.recording("20200101T000000Z-AAAAAAAA")
    with pytest.raises(Unavailable, match="unknown segment"):
        await shelf.library.segment_file(shelf.row, 9)
    assert shelf.library.valid_id(shelf.made.id) and not shelf.library.valid_id("../x")
    assert [r.id for r in await shelf.library.recordings(shelf.cid)] == [shelf.made.id]
    assert await shelf.library.recordings("someone-else") == []


async def test_the_thumbnail_and_talkback_are_made_once(shelf: Shelf) -> None:
    thumbnail = await shelf.library.thumbnail(shelf.row)
    talkback = await shelf.library.talkback_file(shelf.row, 2)
    assert thumbnail == shelf.made.directory / "thumbnail.jpg"
    assert talkback == shelf.made.directory / "talkback-002.webm"
    made_at = (thumbnail.stat().st_mtime_ns, talkback.stat().st_mtime_ns)
    assert await shelf.library.thumbnail(shelf.row) == thumbnail
    assert await shelf.library.talkback_file(shelf.row, 2) == talkback
    assert (thumbnail.stat().st_mtime_ns, talkback.stat().st_mtime_ns) == made_at
    still_open = replace(shelf.row.segments[0], status="open")
    with pytest.raises(Unavailable, match="yet"):
        await shelf.library.talkback_file(replace(shelf.row, segments=(still_open,)), 1)


async def test_marks_and_snapshots_are_on_the_recording_clock(shelf: Shelf) -> None:
    made = shelf.made
    write_log(
        shelf.data, shelf.cid, [at(made, 0.5, op="add", by="surgeon-test", annotation=stroke())]
    )
    store = SnapshotStore(shelf.data)
    during = await store.add(shelf.cid, "surgeon-test", b"png", at=made.started + 2.5)
    await store.add(shelf.cid, "surgeon-test", b"png", at=made.started - 60)  # before: not shown
    manifest = await shelf.library.manifest(shelf.row)
    assert manifest is not None and manifest.recording_id == made.id
    timeline = await shelf.library.timeline(shelf.row, manifest)
    assert timeline is not None and [m.start_t for m in timeline.marks] == [0.5]
    assert await shelf.library.snapshots(shelf.row, manifest) == [(during, 2.5)]
    assert await shelf.library.timeline(shelf.row, None) is None
    assert await shelf.library.snapshots(shelf.row, None) == []
    assert await shelf.library.manifests([shelf.row]) == [manifest]


async def test_integrity_is_cached_until_a_file_changes(
    shelf: Shelf, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recorder import library

    calls: list[str] = []
    verify = library.verify_recording
    monkeypatch.setattr(
        library, "verify_recording", lambda d, r: calls.append(r.id) or verify(d, r)
    )
    assert (await shelf.library.integrity(shelf.row)).ok
    assert (await shelf.library.integrity(shelf.row)).ok
    assert len(calls) == 1
    with shelf.made.segment_path(2).open("ab") as file:
        file.write(b"\0")
    assert not (await shelf.library.integrity(shelf.row)).ok
    assert len(calls) == 2


async def test_export_jobs_are_found_by_well_formed_id_of_their_recording(shelf: Shelf) -> None:
    assert shelf.library.has_video(shelf.row)
    no_video = replace(shelf.row, segments=tuple(replace(s, frames=0) for s in shelf.row.segments))
    assert not shelf.library.has_video(no_video)
    job = shelf.library.start_export(shelf.row, "surgeon-test")
    assert await shelf.library.export_job(shelf.row, job.id) is job
    with pytest.raises(ValueError):
        await shelf.library.export_job(shelf.row, "../../x")
    with pytest.raises(Unavailable):
        await shelf.library.export_job(shelf.row, "AAAAAAAAAAAA")
    other = replace(shelf.row, id="20200101T000000Z-AAAAAAAA")
    with pytest.raises(Unavailable):
        await shelf.library.export_job(other, job.id)
    assert job.done or await shelf.library.export_file(job) is None
