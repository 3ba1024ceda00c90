"""The running server's public URL, left in its data dir so that the CLI beside it prints links
that reach it (``consult create`` against a server on port 8443 must not print port 8080).

``serve`` writes ``server.json`` (URL and process id) once its sockets are bound and removes it on
exit; a file left by a killed server is ignored because its process is gone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from signaling.settings import Settings

FILENAME = "server.json"


def record(settings: Settings) -> None:
    """Called by ``serve`` once it listens."""
    path = settings.data_dir / FILENAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": settings.base_url, "pid": os.getpid()}))
    tmp.replace(path)


def forget(settings: Settings) -> None:
    """Called by ``serve`` as it stops (only its own record)."""
    path = settings.data_dir / FILENAME
    found = _read(path)
    if found is not None and found[1] == os.getpid():
        path.unlink(missing_ok=True)


def public_url(settings: Settings) -> str:
    """Where links should point: ``ENDOLINK_PUBLIC_URL`` if set, else the running server's URL,
    else the address ``serve`` would use with these settings."""
    found = None if settings.public_url else _read(settings.data_dir / FILENAME)
    if found is not None and _running(found[1]):
        return found[0]
    return settings.base_url


def _read(path: Path) -> tuple[str, int] | None:
    try:
        data = json.loads(path.read_text())
        url, pid = data["url"], data["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or not isinstance(pid, int):
        return None
    return url, pid


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
