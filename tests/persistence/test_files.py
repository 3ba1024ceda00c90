"""Atomic writes on real files: a reader sees the old file or the new one, never a mix."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from persistence import files
from persistence.files import (
    Sync,
    fsync_dir,
    move_into_place,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


class Crash(Exception):
    """Stands for the process dying at that instant."""


def crash(*args: object) -> None:
    raise Crash


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each write flushes: ``"file"`` or ``"dir"``, in order."""
    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    return calls


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def write_new(target: Path, sync: Sync) -> None:
    write_bytes_atomic(target, b"new", sync=sync)


def move_new(target: Path, sync: Sync) -> None:
    """As an export or a remux does: a library writes the file, then it is moved into place."""
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(b"new")
    move_into_place(partial, target, sync=sync)


@pytest.mark.parametrize("write", [write_new, move_new])
@pytest.mark.parametrize(
    ("sync", "flushed"), [(Sync.FULL, ["file", "dir"]), (Sync.FILE, ["file"]), (Sync.NONE, [])]
)
def test_a_write_replaces_the_file_and_flushes_what_was_asked(
    tmp_path: Path,
    fsyncs: list[str],
    write: Callable[[Path, Sync], None],
    sync: Sync,
    flushed: list[str],
) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    write(target, sync)
    assert target.read_bytes() == b"new"
    assert fsyncs == flushed
    assert leftovers(tmp_path) == ["a.bin"]


def test_a_write_interrupted_before_the_replace_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    write_json_atomic(target, {"version": 1})
    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(Crash):
        write_json_atomic(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert leftovers(tmp_path) == ["manifest.json"]


def test_a_crash_mid_write_leaves_only_the_temporary_file_beside_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies with the data half written: the target is untouched, and the one
    leftover has a known name (recovery removes ``manifest.json.tmp``)."""
    target = tmp_path / "manifest.json"
    target.write_text("old")
    monkeypatch.setattr(files.os, "fsync", crash)
    monkeypatch.setattr(files.os, "unlink", lambda path: None)  # a dead process cleans nothing
    with pytest.raises(Crash):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == ["manifest.json", "manifest.json.tmp"]


def test_json_is_written_as_json_dumps_would_in_utf_8(tmp_path: Path) -> None:
    value = {"title": "Kniegelenk – Arthroskopie", "n": [1, 2]}
    write_json_atomic(tmp_path / "a.json", value, indent=2, ensure_ascii=False)
    assert (tmp_path / "a.json").read_bytes() == json.dumps(
        value, indent=2, ensure_ascii=False
    ).encode("utf-8")
    write_json_atomic(tmp_path / "b.json", value)
    assert (tmp_path / "b.json").read_text(encoding="ascii") == json.dumps(value)


def test_the_temporary_file_name_is_the_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    write_bytes_atomic(tmp_path / "x.png", b"png", suffix=".partial")
    assert seen == ["x.png.partial"]


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_a_mode_is_exact_and_the_data_is_private_until_it_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    modes: list[int] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        modes.append(stat.S_IMODE(os.stat(src).st_mode))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    real_write = os.fdopen

    def fdopen(fd: int, *args: object) -> object:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, *args)  # type: ignore[call-overload]

    monkeypatch.setattr(files.os, "fdopen", fdopen)
    old_umask = os.umask(0o077 if mode == 0o644 else 0)
    try:
        write_bytes_atomic(tmp_path / "server.key", b"KEY", mode=mode)
    finally:
        os.umask(old_umask)
    assert modes == [0o600, mode]
    assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == mode
    assert leftovers(tmp_path) == ["server.key"]


def test_without_overwrite_the_first_writer_wins(tmp_path: Path) -> None:
    target = tmp_path / "secret.key"
    write_bytes_atomic(target, b"first", mode=0o600, overwrite=False)
    with pytest.raises(FileExistsError):
        write_bytes_atomic(target, b"second", mode=0o600, overwrite=False)
    assert target.read_bytes() == b"first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == ["secret.key"]


def test_fsync_dir_is_best_effort(tmp_path: Path, fsyncs: list[str]) -> None:
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # a file system that refuses: nothing to do, no error
    assert fsyncs == ["dir"]


def test_files_are_private_whatever_the_umask_and_older_ones_are_made_private(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside.txt"
    previous = os.umask(0o022)
    try:
        (root / "recordings" / "r1").mkdir(parents=True)
        (root / "recordings" / "r1" / "segment-001.webm").write_bytes(b"old")
        outside.write_text("not ours")
        (root / "link").symlink_to(outside)
        write_bytes_atomic(root / "new.json", b"{}", sync=Sync.NONE)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((root / "new.json").stat().st_mode) == 0o600
    assert files.make_private(root) == 4  # data, recordings, r1, the segment
    for path in (root, root / "recordings", root / "recordings" / "r1"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "recordings" / "r1" / "segment-001.webm").stat().st_mode) == 0o600
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # a link is never followed
    assert files.make_private(root) == 0
