"""DICOM export: a real recording (segments muxed by the recorder's SegmentWriter from encoded test
pattern frames) written as Video Endoscopic Image objects, read back with ``pydicom.dcmread``, its
one fragment extracted and decoded with PyAV; snapshots as VL Endoscopic Images; the sidecar;
the burned-in series; the job machinery's kind, retention and readable failures."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import av
import cv2
import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_fragments
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    VideoEndoscopicImageStorage,
    VLEndoscopicImageStorage,
)

from client.testpattern import read_stamp
from recorder.dicom_export import SIDECAR, export_dicom
from recorder.dicom_send import StowTarget
from recorder.dicom_uids import study_instance_uid
from recorder.dicom_video import transfer_syntax_for
from recorder.index import RecordingIndex
from recorder.jobs import JobFailed, JobKind, JobState
from recorder.library import RecordingLibrary
from recorder.snapshots import STILL, SnapshotStore
from signaling.db.store import DB_FILENAME, ConsultationStore
from tests.peers import wait_until
from tests.replay_support import FPS, Made, at, make_recording, stroke, write_log

SIZE = (320, 192)
PATIENT = {
    "patient_id": "MN-0042",
    "issuer": "UB Central Hospital",
    "family_name": "Батболд",
    "given_names": "Дулам",
    "birth_date": "1961-04-12",
    "sex": "female",
}


def study_uid(recording_id: str) -> str:
    return study_instance_uid(recording_id, PATIENT["issuer"], PATIENT["patient_id"])


class Recorded:
    def __init__(self, data: Path, index: RecordingIndex, cid: str) -> None:
        self.data, self.index, self.cid = data, index, cid
        self.library = RecordingLibrary(data, index)

    async def make(self, **options: object) -> Made:
        options = {"title": "Upper GI review", "size": SIZE, **options}
        return await make_recording(self.data, self.index, self.cid, **options)  # type: ignore[arg-type]

    async def export(
        self,
        made: Made,
        out: Path,
        burned_in: bool = False,
        patient: dict[str, str] = PATIENT,
        zone: str = "UTC",
    ) -> list[Path]:
        row = await self.library.recording(made.id)
        stills = await self.library.dicom_stills(row, made.manifest)
        plan = self.library.dicom_plan(row, patient, stills, burned_in, zone)
        return export_dicom(plan, out).files


@pytest.fixture
async def recorded(tmp_path: Path) -> AsyncIterator[Recorded]:
    data = tmp_path / "data"
    store = ConsultationStore(data / DB_FILENAME)
    consultation = await store.create("dicom", "VP8", consent_by="Dr. A", recorded_by="t")
    await store.close()
    index = RecordingIndex(data / DB_FILENAME)
    world = Recorded(data, index, consultation.id)
    try:
        yield world
    finally:
        await world.library.close()
        await index.close()


def embedded_stream(path: Path, tmp: Path) -> Path:
    """The one fragment of a video object, written out as the MP4 it is."""
    ds = pydicom.dcmread(path)
    fragments = list(generate_fragments(ds.PixelData))
    assert len(fragments) == 2 and fragments[0] == b""  # empty Basic Offset Table, one fragment
    target = tmp / f"{path.parent.name}-{path.stem}.mp4"
    target.write_bytes(fragments[1])
    return target


def decoded_counters(mp4: Path) -> tuple[list[int], list[float], str]:
    with av.open(str(mp4)) as container:
        profile = container.streams.video[0].codec_context.profile or ""
        frames = list(container.decode(video=0))
    return [read_stamp(f)[0] for f in frames], [float(f.time or 0) for f in frames], profile


@pytest.mark.parametrize(
    ("codec", "profile", "copied"),
    [("VP8", "", False), ("H264", "high", True), ("H264", "baseline", False)],
)
async def test_each_segment_is_a_video_endoscopic_image_whose_stream_decodes_to_the_recording(
    recorded: Recorded, tmp_path: Path, codec: str, profile: str, copied: bool
) -> None:
    made = await recorded.make(segments=(2.0, 1.0), codec=codec, profile=profile or "high")
    files = await recorded.export(made, tmp_path / "out")
    videos = [f for f in files if f.parent.name == "video"]
    assert [f.name for f in videos] == ["001.dcm", "002.dcm"]
    for path, segment in zip(videos, made.manifest.segments, strict=True):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == VideoEndoscopicImageStorage and ds.Modality == "ES"
        assert ds.file_meta.TransferSyntaxUID == MPEG4HP41
        assert ds.StudyInstanceUID == study_uid(made.id)
        assert ds.StudyDescription == "Upper GI review"
        assert str(ds.PatientName) == "Батболд^Дулам" and ds.PatientID == "MN-0042"
        assert ds.IssuerOfPatientID == "UB Central Hospital"
        assert ds.PatientBirthDate == "19610412" and ds.PatientSex == "F"
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert (ds.Rows, ds.Columns) == (SIZE[1], SIZE[0])
        assert ds.PhotometricInterpretation == "YBR_PARTIAL_420" and ds.BitsAllocated == 8
        assert ds.FrameIncrementPointer == 0x00181063 and ds.BurnedInAnnotation == "NO"
        assert ds.InstanceNumber == segment.seq and ds.SeriesNumber == 1
        assert abs(int(ds.NumberOfFrames) - segment.frames) <= 1
        duration = int(ds.NumberOfFrames) * float(ds.FrameTime) / 1000
        assert duration == pytest.approx(segment.frames / FPS, abs=1 / FPS)

        counters, times, stream_profile = decoded_counters(embedded_stream(path, tmp_path))
        assert stream_profile == "High"
        assert len(counters) == int(ds.NumberOfFrames)
        assert counters == list(range(len(counters)))  # every stamped frame, in order
        assert times[-1] - times[0] + 1 / FPS == pytest.approx(duration, abs=1 / FPS)
    sidecar = json.loads((tmp_path / "out" / SIDECAR).read_text())
    assert sidecar["study_instance_uid"] == study_uid(made.id)
    uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert {i["sop_instance_uid"] for i in sidecar["instances"]} == uids
    assert "MN-0042" not in json.dumps(sidecar)  # no patient details beside the files
    if copied:  # the tower's High profile stream went in as it was recorded: no transcoding
        with av.open(str(made.segment_path(1))) as original:
            recorded_packets = [bytes(p) for p in original.demux(video=0) if p.size]
        with av.open(str(embedded_stream(videos[0], tmp_path))) as embedded:
            embedded_packets = [bytes(p) for p in embedded.demux(video=0) if p.size]
        assert embedded_packets == recorded_packets


async def test_snapshots_become_vl_endoscopic_images_with_the_same_pixels(
    recorded: Recorded, tmp_path: Path
) -> None:
    made = await recorded.make(segments=(1.0,))
    picture = np.zeros((96, 128, 3), np.uint8)
    picture[:, :64] = (0, 200, 30)  # RGB: green left half
    picture[10:20, 70:90] = (250, 10, 120)
    png = cv2.imencode(".png", picture[:, :, ::-1])[1].tobytes()  # OpenCV writes BGR
    await SnapshotStore(recorded.data).add(recorded.cid, "surgeon-test", png, at=made.started + 0.5)
    files = await recorded.export(made, tmp_path / "out")
    (still,) = [f for f in files if f.parent.name == "stills"]
    ds = pydicom.dcmread(still)
    assert ds.SOPClassUID == VLEndoscopicImageStorage and ds.Modality == "ES"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SeriesNumber == 2 and ds.StudyInstanceUID == study_uid(made.id)
    assert ds.PhotometricInterpretation == "RGB" and ds.BurnedInAnnotation == "YES"
    assert np.array_equal(ds.pixel_array, picture)


async def test_the_burned_in_series_is_derived_and_references_the_originals(
    recorded: Recorded, tmp_path: Path
) -> None:
    made = await recorded.make(segments=(2.0,))
    write_log(
        recorded.data,
        recorded.cid,
        [
            at(made, 0.5, op="add", by="surgeon-test", annotation=stroke()),
            at(made, 1.5, op="remove", by="surgeon-test", id="m1"),
        ],
    )
    files = await recorded.export(made, tmp_path / "out", burned_in=True)
    original, burned = (pydicom.dcmread(f) for f in files)
    assert burned.SeriesNumber == 3 and list(burned.ImageType) == ["DERIVED", "SECONDARY"]
    assert burned.BurnedInAnnotation == "YES"
    assert burned.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert abs(int(burned.NumberOfFrames) - int(original.NumberOfFrames)) <= 1
    sidecar = json.loads((tmp_path / "out" / SIDECAR).read_text())
    (mark,) = sidecar["marks"]
    assert mark["id"] == "m1"
    with av.open(str(embedded_stream(files[1], tmp_path))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    x, y = SIZE[0] // 2, SIZE[1] // 2
    green = [int(f[y, x, 1]) > 150 and int(f[y, x, 0]) < 90 for f in frames]
    assert any(green[20:40]) and not any(green[50:])  # drawn 0.5–1.5 s, not in the pixels after


def test_the_transfer_syntax_is_the_level_that_holds_the_picture() -> None:
    assert transfer_syntax_for(1920, 1080, 30) == MPEG4HP41
    assert transfer_syntax_for(1280, 720, 60) == MPEG4HP41
    assert transfer_syntax_for(1920, 1080, 60) == "1.2.840.10008.1.2.4.104"
    with pytest.raises(JobFailed, match="beyond"):
        transfer_syntax_for(3840, 2160, 30)


async def test_a_dicom_job_that_cannot_reach_the_archive_fails_readably_without_a_traceback(
    recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    made = await recorded.make(segments=(1.0,))
    row = await recorded.library.recording(made.id)
    archive = StowTarget("http://user:secret-pass@127.0.0.1:9/dicom-web")  # discard: refused

    def plan():  # type: ignore[no-untyped-def]
        return recorded.library.dicom_plan(row, PATIENT, [], False)

    with caplog.at_level(logging.INFO):
        job = recorded.library.start_dicom_export(row, "surgeon-test", plan, archive)
        assert job.kind is JobKind.DICOM
        assert await wait_until(lambda: job.state is JobState.FAILED, timeout=30), job
    assert job.error is not None and "127.0.0.1:9 could not be reached" in job.error
    assert not any(r.exc_info for r in caplog.records)
    assert "secret-pass" not in caplog.text and "MN-0042" not in caplog.text
    assert not job.file.exists() and not list(job.directory.glob("*.d"))

    done = recorded.library.start_dicom_export(row, "surgeon-test", plan)
    assert await wait_until(lambda: done.state is JobState.DONE, timeout=30), done
    assert done.file.suffix == ".zip" and done.result and done.result["instances"] == 1
    assert not job.directory.joinpath(f"{job.id}.json").exists()  # the failed one replaced


async def test_a_re_export_makes_the_same_instances_and_another_patient_another_study(
    recorded: Recorded, tmp_path: Path
) -> None:
    made = await recorded.make(segments=(1.0,))

    def uids(files: list[Path]) -> list[tuple[str, str, str]]:
        read = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        return [(d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID) for d in read]

    first = uids(await recorded.export(made, tmp_path / "a"))
    again = uids(await recorded.export(made, tmp_path / "b"))
    assert again == first  # idempotent in the archive: the same objects, not duplicates
    renamed = uids(await recorded.export(made, tmp_path / "c", patient={**PATIENT, "sex": "male"}))
    assert renamed[0][:2] == first[0][:2] and renamed[0][2] != first[0][2]  # corrected: new SOP
    other = uids(await recorded.export(made, tmp_path / "d", patient={"patient_id": "MN-9"}))
    assert not {u for t in other for u in t} & {u for t in first for u in t}


async def test_dates_and_times_are_the_hospitals_local_time_with_its_offset(
    recorded: Recorded, tmp_path: Path
) -> None:
    made = await recorded.make(segments=(1.0,))
    (utc,) = await recorded.export(made, tmp_path / "utc")
    (seoul,) = await recorded.export(made, tmp_path / "seoul", zone="Asia/Seoul")
    a, b = (pydicom.dcmread(f, stop_before_pixels=True) for f in (utc, seoul))
    assert a.TimezoneOffsetFromUTC == "+0000" and b.TimezoneOffsetFromUTC == "+0900"
    moment = datetime.strptime(a.StudyDate + a.StudyTime, "%Y%m%d%H%M%S.%f")
    local = datetime.strptime(b.StudyDate + b.StudyTime, "%Y%m%d%H%M%S.%f")
    assert local - moment == timedelta(hours=9)
    assert b.SOPInstanceUID != a.SOPInstanceUID  # other attributes: another instance


async def test_an_undecodable_still_is_left_out_with_a_note_not_the_whole_export(
    recorded: Recorded, tmp_path: Path
) -> None:
    made = await recorded.make(segments=(1.0,))
    png = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    store = SnapshotStore(recorded.data)
    await store.add(
        recorded.cid, "clinic-test", b"\xff\xd8\xff\xd9", at=made.started + 0.2, kind=STILL
    )
    await store.add(recorded.cid, "surgeon-test", png, at=made.started + 0.5)
    files = await recorded.export(made, tmp_path / "out")
    assert [f.name for f in files if f.parent.name == "stills"] == ["001.dcm"]
    (note,) = json.loads((tmp_path / "out" / SIDECAR).read_text())["skipped"]
    assert note.endswith("the picture could not be decoded (UnidentifiedImageError)")
