"""A real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) for the DICOM export tests.

Each test gets its own: a config file, storage and index directories and log in its tmp_path,
free HTTP and DICOM ports, the DICOMweb plugin loaded from its Debian path. HTTP answers loopback
only (``RemoteAccessAllowed: false``); C-STORE is accepted only from our AE title on 127.0.0.1.
It neither needs nor disturbs the ``orthanc`` service the Debian package installs. Started and
stopped by pid (SIGTERM, then SIGKILL), every wait bounded.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import free_port

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
AE_TITLE = "ORTHANCTEST"
OUR_AE_TITLE = "ENDOLINKTEST"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Orthanc:
    """One running Orthanc: its process, where it answers, where it logs."""

    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    log_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def dicom_address(self) -> tuple[str, str, int]:
        return (AE_TITLE, "127.0.0.1", self.dicom_port)

    def get(self, path: str) -> Any:
        """A JSON answer of Orthanc's REST API or DICOMweb (QIDO-RS, WADO-RS metadata)."""
        request = urllib.request.Request(self.url + path, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.log_dir.glob("*"))


def _config(directory: Path, http_port: int, dicom_port: int) -> Path:
    config = {
        "Name": "endolink-test",
        "StorageDirectory": str(directory / "storage"),
        "IndexDirectory": str(directory / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": AE_TITLE,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {"endolink": [OUR_AE_TITLE, "127.0.0.1", 104]},
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "ConcurrentJobs": 1,
    }
    path = directory / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@contextlib.contextmanager
def running_orthanc(directory: Path) -> Iterator[Orthanc]:
    """Orthanc on free loopback ports with everything under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    log_dir = directory / "logs"
    log_dir.mkdir(exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = _config(directory, http_port, dicom_port)
    process = subprocess.Popen(
        [ORTHANC, f"--logdir={log_dir}", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    orthanc = Orthanc(process, http_port, dicom_port, log_dir)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({process.returncode}): {orthanc.log_text()}")
            with contextlib.suppress(OSError):
                if orthanc.get("/system")["DicomAet"] == AE_TITLE:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start in {START_TIMEOUT_S} s")
            time.sleep(0.2)
        yield orthanc
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
