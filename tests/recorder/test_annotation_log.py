"""The annotation timeline on disk: lines survive and keep their order, each is flushed as it is
written, a torn line costs only itself, and a full queue drops instead of blocking."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder import annotation_log
from recorder.annotation_log import AnnotationLog, AnnotationLogs, read_annotation_log
from tests.peers import wait_until


def entry(i: int) -> dict[str, object]:
    return {"ts": f"t{i}", "op": "add", "by": "surgeon-1", "annotation": {"id": f"m{i}"}}


async def test_every_entry_survives_in_order_and_the_reader_parses_it(tmp_path: Path) -> None:
    log = AnnotationLog(tmp_path / "c1" / "annotations.jsonl")
    for i in range(500):
        log.append(entry(i))
    await log.close()
    assert read_annotation_log(log.path) == [entry(i) for i in range(500)]
    assert log.dropped == 0


async def test_lines_are_on_disk_while_the_log_is_still_open(tmp_path: Path) -> None:
    log = AnnotationLog(tmp_path / "annotations.jsonl")
    log.append(entry(1))
    log.append(entry(2))
    assert await wait_until(lambda: len(read_annotation_log(log.path)) == 2, timeout=3)
    log.append(entry(3))
    assert await wait_until(lambda: len(read_annotation_log(log.path)) == 3, timeout=3)
    await log.close()
    log.append(entry(4))  # after close: ignored, never raises
    assert len(read_annotation_log(log.path)) == 3


async def test_a_torn_last_line_costs_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "annotations.jsonl"
    path.write_text('{"ts":"t0","op":"add"}\n{"ts":"t1","op":"ad')  # the process died mid-write
    log = AnnotationLog(path)
    log.append(entry(2))
    await log.close()
    assert read_annotation_log(path) == [{"ts": "t0", "op": "add"}, entry(2)]


async def test_a_full_queue_drops_entries_instead_of_blocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(annotation_log, "QUEUE_ENTRIES", 2)
    log = AnnotationLog(tmp_path / "annotations.jsonl")
    for i in range(10):  # no await: the writer cannot run in between
        log.append(entry(i))
    assert log.dropped == 8
    await log.close()
    assert read_annotation_log(log.path) == [entry(0), entry(1)]


async def test_one_log_per_consultation_under_the_data_dir(tmp_path: Path) -> None:
    logs = AnnotationLogs(tmp_path)
    first = logs.get("consult1")
    assert logs.get("consult1") is first
    assert first.path == tmp_path / "consultations" / "consult1" / "annotations.jsonl"
    with pytest.raises(ValueError):
        logs.get("../escape")
    first.append(entry(0))
    await logs.close()
    assert read_annotation_log(first.path) == [entry(0)]


def test_a_missing_log_is_an_empty_timeline(tmp_path: Path) -> None:
    assert read_annotation_log(tmp_path / "nothing.jsonl") == []
