"""Sending a recording's DICOM files to a hospital archive: STOW-RS (DICOMweb, PS3.18 10.5) or
C-STORE (DIMSE, PS3.4 B, with pynetdicom).

Both are blocking from the caller's side and run in the export worker (STOW-RS on its own event
loop there, streaming the files from disk). A target that cannot be reached, refuses the
association or rejects an instance is a ``JobFailed`` whose message says so in words, naming the
archive by host and port only: a STOW URL may carry credentials, and nothing here logs them.
pynetdicom's own logger is kept to warnings (its debug output would list the datasets).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pydicom import dcmread
from pynetdicom import AE
from yarl import URL

from .jobs import JobFailed

logger = logging.getLogger(__name__)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

CONNECT_TIMEOUT_S = 10.0
"Seconds to reach the archive before the job fails (an archive that is down)."
READ_TIMEOUT_S = 300.0
"Seconds the archive may take to answer once it has the files (it parses and stores them)."
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

    def send(self, files: list[Path]) -> dict[str, Any]:
        """Store every file in one STOW-RS request; what the archive stored."""
        try:
            answer = asyncio.run(self._post(files))
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

    async def _post(self, files: list[Path]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S)
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

    def send(self, files: list[Path]) -> dict[str, Any]:
        """One association, one C-STORE per file, each stored in the transfer syntax it has."""
        ae = AE(ae_title=self.calling)
        ae.connection_timeout = ae.acse_timeout = CONNECT_TIMEOUT_S
        ae.dimse_timeout = ae.network_timeout = READ_TIMEOUT_S
        contexts = set()
        for path in files:
            meta = dcmread(path, stop_before_pixels=True).file_meta
            contexts.add((meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID))
        for sop_class, syntax in sorted(contexts):
            ae.add_requested_context(sop_class, syntax)
        try:  # pynetdicom leaks its socket (and logs errors) when it cannot connect: ask first
            socket.create_connection((self.host, self.port), CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise JobFailed(f"{self.where()} could not be reached ({_words(exc)})") from None
        association = ae.associate(self.host, self.port, ae_title=self.called)
        if not association.is_established:
            raise JobFailed(f"{self.where()} could not be reached or refused the association")
        stored = 0
        try:
            for path in files:
                status = association.send_c_store(path)
                if getattr(status, "Status", None) != 0x0000:
                    code = getattr(status, "Status", None)
                    reason = "no answer" if code is None else f"status 0x{code:04X}"
                    raise JobFailed(f"{self.where()} did not store {path.name} ({reason})")
                stored += 1
        finally:
            association.release()
        return {"sent": self.kind, "stored": stored}


def _words(exc: BaseException) -> str:
    """A failure to reach a server, said without its URL."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or "connection failed"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
