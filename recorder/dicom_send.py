"""Sending a recording's DICOM files to a hospital archive: STOW-RS (DICOMweb, PS3.18 10.5) or
C-STORE (DIMSE, PS3.4 B, with pynetdicom).

Both are blocking from the caller's side and run in the export worker (STOW-RS on its own event
loop there, streaming the files from disk). A send has one overall deadline (``deadline_s``: a
minute plus the files at 1 MB/s) and stops when the job is cancelled: between files for C-STORE,
before and during the upload for STOW-RS. C-STORE counts the warning statuses of PS3.4 B.2.3
("stored with coercion" and the like) as stored, and first checks that the archive accepted the
presentation contexts, so a refusal of Video Endoscopic images is a sentence, not a traceback.
A target that cannot be reached, refuses the association or rejects an instance is a
``JobFailed`` whose message says so in words, naming the archive by host and port only: a STOW
URL may carry credentials, and nothing here logs them.
pynetdicom's own logger is kept to warnings (its debug output would list the datasets).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pydicom import dcmread
from pydicom.uid import UID, VideoEndoscopicImageStorage, VLEndoscopicImageStorage
from pynetdicom import AE
from yarl import URL

from .export import ExportCancelled
from .jobs import JobFailed

logger = logging.getLogger(__name__)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

CONNECT_TIMEOUT_S = 10.0
"Seconds to reach the archive before the job fails (an archive that is down)."
SEND_BASE_S = 60.0
"The fixed part of a send's deadline (the archive parses and stores what it got)."
SEND_BYTES_PER_S = 1_000_000
"The slowest transfer a send is given time for: 1 MB/s on top of ``SEND_BASE_S``."
CANCEL_POLL_S = 0.2
"How often a STOW-RS upload looks whether the job was cancelled."
STORED_WITH_WARNING = frozenset({0xB000, 0xB006, 0xB007})
"""C-STORE warnings (coercion of data elements, elements discarded, data set does not match the
SOP class): the archive stored the object (PS3.4 B.2.3)."""
_WHAT = {
    str(VideoEndoscopicImageStorage): "H.264 Video Endoscopic images",
    str(VLEndoscopicImageStorage): "VL Endoscopic images (the snapshots)",
}
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"


@dataclass(frozen=True)
class StowTarget:
    """A DICOMweb service root (``…/dicom-web``); credentials, if any, in the URL's user info."""

    url: str = field(repr=False)

    @property
    def kind(self) -> str:
        return "stow"

    def where(self) -> str:
        address = URL(self.url)
        return f"the archive at {address.host}:{address.port}"

    def send(self, files: list[Path], cancelled: Callable[[], bool]) -> dict[str, Any]:
        """Store every file in one STOW-RS request; what the archive stored."""
        if cancelled():
            raise ExportCancelled
        try:
            answer = asyncio.run(self._watched(files, cancelled))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise JobFailed(f"{self.where()} could not be reached ({_words(exc)})") from None
        failed = answer.get(_FAILED_SOP_SEQUENCE, {}).get("Value", [])
        stored = answer.get(_REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
        if failed or len(stored) != len(files):
            raise JobFailed(
                f"{self.where()} stored {len(stored)} of {len(files)} DICOM objects "
                f"({len(failed)} refused)"
            )
        return {"sent": self.kind, "stored": len(stored)}

    async def _watched(self, files: list[Path], cancelled: Callable[[], bool]) -> dict[str, Any]:
        """The upload, stopped when the job is cancelled."""
        post = asyncio.ensure_future(self._post(files))
        while not post.done():
            if cancelled():
                post.cancel()
                raise ExportCancelled
            await asyncio.wait({post}, timeout=CANCEL_POLL_S)
        return post.result()

    async def _post(self, files: list[Path]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=deadline_s(files), connect=CONNECT_TIMEOUT_S)
        handles = [path.open("rb") for path in files]
        try:
            with aiohttp.MultipartWriter("related") as body:
                for handle in handles:
                    body.append(handle, {aiohttp.hdrs.CONTENT_TYPE: "application/dicom"})
            content_type = f'multipart/related; type="application/dicom"; boundary={body.boundary}'
            headers = {
                aiohttp.hdrs.CONTENT_TYPE: content_type,
                aiohttp.hdrs.ACCEPT: "application/dicom+json",
            }
            async with aiohttp.ClientSession(timeout=timeout) as session:
                url = self.url.rstrip("/") + "/studies"
                async with session.post(url, data=body, headers=headers) as response:
                    if response.status not in (200, 202, 409):
                        raise JobFailed(
                            f"{self.where()} refused the DICOM objects (HTTP {response.status})"
                        )
                    answer = await response.json(content_type=None)
        finally:
            for handle in handles:
                handle.close()
        return answer if isinstance(answer, dict) else {}


@dataclass(frozen=True)
class StoreTarget:
    """A DICOM archive reached by C-STORE: its AE title, host and port, and ours."""

    called: str
    host: str
    port: int
    calling: str = "ENDOLINK"

    @property
    def kind(self) -> str:
        return "c-store"

    def where(self) -> str:
        return f"the archive {self.called} at {self.host}:{self.port}"

    def send(self, files: list[Path], cancelled: Callable[[], bool]) -> dict[str, Any]:
        """One association, one C-STORE per file, each stored in the transfer syntax it has."""
        deadline = time.monotonic() + deadline_s(files)
        ae = AE(ae_title=self.calling)
        ae.connection_timeout = ae.acse_timeout = CONNECT_TIMEOUT_S
        ae.dimse_timeout = ae.network_timeout = deadline_s(files)
        needed: dict[Path, tuple[str, str]] = {}
        for path in files:
            meta = dcmread(path, stop_before_pixels=True).file_meta
            needed[path] = (meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        for sop_class, syntax in sorted(set(needed.values())):
            ae.add_requested_context(sop_class, syntax)
        try:  # pynetdicom leaks its socket (and logs errors) when it cannot connect: ask first
            socket.create_connection((self.host, self.port), CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise JobFailed(f"{self.where()} could not be reached ({_words(exc)})") from None
        association = ae.associate(self.host, self.port, ae_title=self.called)
        if not association.is_established:
            raise JobFailed(f"{self.where()} could not be reached or refused the association")
        stored = coerced = 0
        try:
            self._check_accepted(association.accepted_contexts, set(needed.values()))
            for path in files:
                left = deadline - time.monotonic()
                if cancelled():
                    raise ExportCancelled
                if left <= 0:
                    raise JobFailed(f"{self.where()} did not store every object in time")
                association.dimse_timeout = association.network_timeout = left
                code = getattr(association.send_c_store(path), "Status", None)
                if code not in (0x0000, *STORED_WITH_WARNING):
                    reason = "no answer" if code is None else f"status 0x{code:04X}"
                    raise JobFailed(f"{self.where()} did not store {path.name} ({reason})")
                stored += 1
                coerced += code != 0x0000
        finally:
            association.release()
        return {"sent": self.kind, "stored": stored, "coerced": coerced}

    def _check_accepted(self, accepted: list[Any], needed: set[tuple[str, str]]) -> None:
        """``JobFailed`` naming what the archive refused to take (before anything is sent)."""
        taken = {(c.abstract_syntax, c.transfer_syntax[0]) for c in accepted}
        for sop_class, syntax in sorted(needed - taken):
            what = _WHAT.get(sop_class) or UID(sop_class).name
            raise JobFailed(f"{self.where()} does not accept {what} ({UID(syntax).name})")


def deadline_s(files: list[Path]) -> float:
    """A send's overall deadline: ``SEND_BASE_S`` plus the files at ``SEND_BYTES_PER_S``."""
    return SEND_BASE_S + sum(path.stat().st_size for path in files) / SEND_BYTES_PER_S


def _words(exc: BaseException) -> str:
    """A failure to reach a server, said without its URL."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or "connection failed"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
