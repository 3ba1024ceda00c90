"""Atomic file writes: a reader (or the next start after a crash) sees the old file or the new one,
never a partial one.

The data goes to a temporary file beside the target (same file system, so the rename is atomic),
which then replaces it. How much survives a power loss is each caller's choice (``Sync``): a
manifest must, a thumbnail can be made again.

Everything in the data directory is private to the service user (patients' names, pictures and
video): files are made 0600 here whatever the umask, ``endolink serve`` sets the umask to 077
for what libraries write (SQLite, PyAV), and ``make_private`` fixes what an older version or
another tool left readable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private(root: Path) -> int:
    """Directories 0700 and files 0600 under ``root`` (itself included; symbolic links are left
    alone, never followed); how many were changed. Blocking: at start-up."""
    changed = 0
    for path, mode in _tree(root):
        try:
            if path.lstat().st_mode & 0o777 != mode:
                os.chmod(path, mode)
                changed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:  # another user's file: the operator has to fix it
            logger.warning("could not make %s private: %s", path, exc.strerror)
    return changed


def _tree(root: Path) -> Iterator[tuple[Path, int]]:
    yield root, PRIVATE_DIR
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            if not os.path.islink(os.path.join(directory, name)):
                yield Path(directory, name), PRIVATE_DIR
        for name in files:
            if not os.path.islink(os.path.join(directory, name)):
                yield Path(directory, name), PRIVATE_FILE


class Sync(Enum):
    """What is flushed to the disk before a write returns."""

    NONE = "none"
    "Nothing: atomic against a crash of the process, not of the machine."
    FILE = "file"
    "The new data before the rename: after a power loss, the old file or the complete new one."
    FULL = "full"
    "The data and then the directory entry: once the call returns, the new file survives."


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed directory entry durable (best effort: some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def move_into_place(temporary: Path, target: Path, *, sync: Sync = Sync.FULL) -> None:
    """Replace ``target`` by the complete file ``temporary`` (written by a library, say)."""
    if sync is not Sync.NONE:
        with temporary.open("rb") as file:
            os.fsync(file.fileno())
    os.replace(temporary, target)
    if sync is Sync.FULL:
        fsync_dir(target.parent)


def write_bytes_atomic(
    target: Path,
    data: bytes,
    *,
    sync: Sync = Sync.FULL,
    suffix: str = ".tmp",
    mode: int | None = None,
    overwrite: bool = True,
) -> None:
    """Write ``data`` to ``target`` atomically.

    The temporary file is ``<target><suffix>`` (a crash leaves at most that one behind), unless
    ``mode`` is given: then it is a private file with a unique name (``.<target>-XXXX``, mode
    0600, so a secret is never readable by others, even briefly), given ``mode`` before it is
    renamed. Without ``mode`` the file is 0600 as well (``PRIVATE_FILE``). ``overwrite=False``
    never replaces an existing file: it links the new one into place and raises
    ``FileExistsError`` if another writer won.
    """
    if mode is None:
        temporary = target.with_name(target.name + suffix)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    else:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
        temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            if sync is not Sync.NONE:
                file.flush()
                os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        if overwrite:
            os.replace(temporary, target)
        else:
            try:
                os.link(temporary, target)
            finally:
                os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if sync is Sync.FULL:
        fsync_dir(target.parent)


def write_text_atomic(
    target: Path, text: str, *, sync: Sync = Sync.FULL, suffix: str = ".tmp"
) -> None:
    """``text`` as UTF-8, atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(target, text.encode("utf-8"), sync=sync, suffix=suffix)


def write_json_atomic(
    target: Path,
    value: Any,
    *,
    indent: int | None = None,
    ensure_ascii: bool = True,
    sync: Sync = Sync.FULL,
    suffix: str = ".tmp",
) -> None:
    """``json.dumps(value)`` as UTF-8, atomically (see :func:`write_bytes_atomic`)."""
    text = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
    write_text_atomic(target, text, sync=sync, suffix=suffix)
