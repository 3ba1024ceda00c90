"""Sending to an archive, against a real DICOM storage SCP (pynetdicom's, on 127.0.0.1, started
and shut down by the test) that answers "stored with coercion" and takes no video: warnings count
as stored, a refused SOP class is a sentence before anything is sent, a cancelled job sends
nothing; and the job machinery's answer to a second export with other parameters."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG4HP41, ExplicitVRLittleEndian, VLEndoscopicImageStorage
from pynetdicom import AE, evt
from pynetdicom.events import Event

from recorder.dicom_send import StoreTarget, StowTarget
from recorder.dicom_stills import still_instance
from recorder.dicom_study import Series, Study, new_instance
from recorder.export import ExportCancelled
from recorder.jobs import ExportJob, ExportJobs, JobBusy, JobFailed, JobKind, JobOutcome, JobState
from tests.peers import wait_until

PACS = "TESTPACS"
CODING_OR_ELEMENTS_COERCED = 0xB000
STUDY = Study("20250101T000000Z-AAAAAAAA", "Gastro", "2025-01-01T00:00:00Z", {"patient_id": "P1"})


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A snapshot (VL Endoscopic) and a video object (its stream a stand-in: never sent)."""
    png = tmp_path / "still.png"
    cv2.imwrite(str(png), np.full((48, 64, 3), 90, np.uint8))
    still = still_instance(Series(STUDY, 2, "stills", "Snapshots"), png, 1, STUDY.started_at)
    still.save_as(tmp_path / "still.dcm", enforce_file_format=True)
    video = new_instance(
        Series(STUDY, 1, "video", "Endoscope video"),
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",
        MPEG4HP41,
        1,
        STUDY.started_at,
    )
    video.PixelData = encapsulate([b"\0\0\0\1" * 4], has_bot=False)
    video["PixelData"].VR = "OB"
    video.save_as(tmp_path / "video.dcm", enforce_file_format=True)
    return tmp_path / "still.dcm", tmp_path / "video.dcm"


@pytest.fixture
def archive() -> Iterator[tuple[StoreTarget, list[str]]]:
    """A storage SCP that takes snapshots only and answers each with a coercion warning."""
    received: list[str] = []

    def on_store(event: Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return CODING_OR_ELEMENTS_COERCED

    ae = AE(ae_title=PACS)
    ae.add_supported_context(VLEndoscopicImageStorage, ExplicitVRLittleEndian)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield StoreTarget(PACS, "127.0.0.1", server.server_address[1], "ENDOLINKTEST"), received
    finally:
        server.shutdown()


def test_stored_with_coercion_counts_as_stored(
    files: tuple[Path, Path], archive: tuple[StoreTarget, list[str]]
) -> None:
    target, received = archive
    still, _ = files
    assert target.send([still], lambda: False) == {"sent": "c-store", "stored": 1, "coerced": 1}
    assert len(received) == 1


def test_an_archive_that_takes_no_video_is_said_in_words_before_anything_is_sent(
    files: tuple[Path, Path], archive: tuple[StoreTarget, list[str]]
) -> None:
    target, received = archive
    with pytest.raises(JobFailed, match="does not accept H.264 Video Endoscopic images"):
        target.send(list(files), lambda: False)
    assert received == []


def test_a_cancelled_job_sends_nothing(
    files: tuple[Path, Path], archive: tuple[StoreTarget, list[str]]
) -> None:
    target, received = archive
    with pytest.raises(ExportCancelled):
        target.send([files[0]], lambda: True)
    with pytest.raises(ExportCancelled):
        StowTarget("http://127.0.0.1:9/dicom-web").send([files[0]], lambda: True)
    assert received == []


async def test_a_second_export_with_other_parameters_is_refused_while_one_runs(
    tmp_path: Path,
) -> None:
    jobs, release = ExportJobs(), threading.Event()

    def work(job: ExportJob) -> JobOutcome:
        release.wait(10)
        job.file.write_bytes(b"zip")
        return JobOutcome(3)

    def start(same: str) -> ExportJob:
        return jobs.start_work("rec", tmp_path, "admin-test", work, JobKind.DICOM, same)

    try:
        first = start("same parameters")
        assert start("same parameters") is first
        with pytest.raises(JobBusy, match="an export of this recording is running"):
            start("other parameters")
        release.set()
        assert await wait_until(lambda: first.state is JobState.DONE, timeout=10), first
        assert start("other parameters") is not first
    finally:
        release.set()
        jobs.close()
