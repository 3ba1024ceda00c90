"""``endolink recordings verify`` catches any change to a recording after the fact: one flipped
byte, a truncated file, a deleted segment, an edited manifest — and says which file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from persistence.times import utc_now_iso
from recorder.index import RecordingIndex
from recorder.integrity import chain_genesis, chain_next
from recorder.manifest import (
    MANIFEST,
    Manifest,
    RecordingStatus,
    Segment,
    SegmentStatus,
    new_recording_id,
    recording_dir,
    segment_filename,
    write_manifest,
)
from recorder.verify import Verdict, verify_recording
from recorder.writer import SegmentWriter, Track
from signaling.cli import main
from signaling.db.store import DB_FILENAME, ConsultationStore

from .media import decode, encoded_opus, encoded_vp8


async def make_recording(data_dir: Path, index: RecordingIndex, cid: str) -> Manifest:
    """A finished two-segment recording written by the real SegmentWriter (no peers needed)."""
    rid = new_recording_id()
    directory = recording_dir(data_dir, rid)
    directory.mkdir(parents=True)
    manifest = Manifest(
        recording_id=rid,
        consultation={"id": cid, "title": "verify"},
        status=RecordingStatus.COMPLETE,
        started_at=utc_now_iso(),
        container="webm",
        mime_type="video/webm",
        video_codec="VP8",
        keyframe_interval_s=2.0,
        stop_reason="shutdown",
    )
    video, audio = encoded_vp8(45), encoded_opus(75)
    frames = sorted(
        [(n * 3000 / 90000, Track.VIDEO, d, n * 3000, k) for n, (d, k) in enumerate(video)]
        + [(n * 960 / 48000, Track.AUDIO, d, n * 960, True) for n, d in enumerate(audio)],
        key=lambda f: f[0],
    )
    chain = chain_genesis(rid)
    for seq in (1, 2):
        name = segment_filename(seq, ".webm")
        writer = SegmentWriter(directory / name, "VP8", on_error=lambda message: None)
        writer.start()
        for _, track, data, pts, keyframe in frames:
            assert writer.submit(track, data, pts, keyframe)
        result = await asyncio.wrap_future(writer.close())
        assert result.sha256 is not None and result.error is None
        chain = chain_next(chain, result.sha256)
        manifest.segments.append(
            Segment(
                seq=seq,
                file=name,
                status=SegmentStatus.CLOSED,
                started_at=utc_now_iso(),
                ended_at=utc_now_iso(),
                duration_s=result.duration_s(),
                frames=result.packets[Track.VIDEO],
                bytes=result.bytes,
                sha256=result.sha256,
                chain=chain,
            )
        )
    manifest.ended_at = utc_now_iso()
    write_manifest(directory, manifest)
    await index.save(manifest)
    return manifest


@pytest.fixture
async def recorded(tmp_path: Path) -> AsyncIterator[tuple[Path, Manifest]]:
    data = tmp_path / "data"
    store = ConsultationStore(data / DB_FILENAME)
    consultation = await store.create("verify", "VP8", consent_by="Dr. A", recorded_by="t")
    await store.close()
    index = RecordingIndex(data / DB_FILENAME)
    try:
        yield data, await make_recording(data, index, consultation.id)
    finally:
        await index.close()


async def check(data: Path, manifest: Manifest) -> dict[str, Verdict]:
    index = RecordingIndex(data / DB_FILENAME)
    try:
        row = await index.get(manifest.recording_id)
    finally:
        await index.close()
    assert row is not None
    result = await asyncio.to_thread(verify_recording, data, row)
    return {item.file: item.verdict for item in result.files}


async def cli(data: Path, *args: str) -> int:
    """The real command (its own event loop, so in a thread)."""
    return await asyncio.to_thread(main, ["recordings", "verify", *args, "--data-dir", str(data)])


async def test_an_untouched_recording_verifies_ok_and_plays(
    recorded: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    data, manifest = recorded
    assert await check(data, manifest) == {
        "segment-001.webm": Verdict.OK,
        "segment-002.webm": Verdict.OK,
        MANIFEST: Verdict.OK,
    }
    directory = recording_dir(data, manifest.recording_id)
    assert len(decode(directory / "segment-001.webm").counters) == 45
    assert await cli(data, manifest.recording_id) == 0
    assert await cli(data) == 0  # every recording
    out = capsys.readouterr().out
    assert "segment-002.webm" in out and "1 of 1 recording(s) verified OK" in out

    listing = ["recordings", "list", "--data-dir", str(data)]
    assert await asyncio.to_thread(main, [*listing, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["id"], row["status"], len(row["segments"])) == (
        manifest.recording_id,
        "complete",
        2,
    )
    assert await asyncio.to_thread(main, listing) == 0
    assert manifest.recording_id in capsys.readouterr().out


async def test_one_flipped_byte_is_reported_as_modified(
    recorded: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    data, manifest = recorded
    path = recording_dir(data, manifest.recording_id) / "segment-002.webm"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))

    verdicts = await check(data, manifest)
    assert verdicts["segment-001.webm"] is Verdict.OK
    assert verdicts["segment-002.webm"] is Verdict.MODIFIED
    assert await cli(data, manifest.recording_id) == 1
    assert "segment-002.webm" in (out := capsys.readouterr().out) and "MODIFIED" in out
    assert await cli(data, manifest.recording_id, "--json") == 1
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert {f["file"]: f["verdict"] for f in report["files"]}["segment-002.webm"] == "MODIFIED"


async def test_a_truncated_segment_is_reported_as_truncated(
    recorded: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    data, manifest = recorded
    path = recording_dir(data, manifest.recording_id) / "segment-001.webm"
    path.write_bytes(path.read_bytes()[:-1000])

    assert (await check(data, manifest))["segment-001.webm"] is Verdict.TRUNCATED
    assert await cli(data, manifest.recording_id) == 1
    assert "TRUNCATED" in capsys.readouterr().out


async def test_a_deleted_segment_is_missing_and_an_edited_manifest_is_modified(
    recorded: tuple[Path, Manifest],
) -> None:
    data, manifest = recorded
    directory = recording_dir(data, manifest.recording_id)
    (directory / "segment-001.webm").unlink()
    on_disk = json.loads((directory / MANIFEST).read_text())
    on_disk["segments"][1]["sha256"] = "0" * 64  # someone "fixes" the manifest to match
    (directory / MANIFEST).write_text(json.dumps(on_disk))

    verdicts = await check(data, manifest)
    assert verdicts["segment-001.webm"] is Verdict.MISSING
    assert verdicts["segment-002.webm"] is Verdict.OK
    assert verdicts[MANIFEST] is Verdict.MODIFIED
    assert await cli(data, manifest.recording_id) == 1


async def test_verify_refuses_malformed_and_unknown_ids(
    recorded: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = recorded
    assert await cli(data, "../../etc/passwd") == 2
    assert await cli(data, "20250101T000000Z-AAAAAAAA") == 1
    err = capsys.readouterr().err
    assert "not a recording id" in err and "unknown recording" in err


async def test_a_consultation_created_with_no_recording_has_its_switch_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    command = ["consult", "create", "--consent-by", "Dr. A", "--no-recording", "--json"]
    assert await asyncio.to_thread(main, [*command, "--data-dir", str(data)]) == 0
    cid = json.loads(capsys.readouterr().out)["id"]
    store = ConsultationStore(data / DB_FILENAME)
    try:
        assert await store.recording_enabled(cid) is False
    finally:
        await store.close()
