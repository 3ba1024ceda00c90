"""The annotation timeline on disk: lines survive and keep their order, each is flushed as it is
written, a torn line costs only itself, a full queue drops instead of blocking, and the format is
the same bytes it always was."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder import annotation_log
from recorder.annotation_log import AnnotationLog, AnnotationLogs, read_annotation_log
from recorder.log_entry import LogEntry, LogOp
from tests.peers import wait_until


def entry(i: int) -> LogEntry:
    return LogEntry(LogOp.ADD, f"t{i}", None, "surgeon-1", {"annotation": {"id": f"m{i}"}})


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
    assert read_annotation_log(path) == [LogEntry(LogOp.ADD, "t0", None, None), entry(2)]


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


# Lines as the server wrote them before ``LogEntry`` existed (one of each op, and a line a person
# or another tool wrote with spaces and its keys in another order).
OLD_LOG = (
    b'{"ts":"2025-01-01T00:00:01.000+00:00","op":"add","annotation":{"id":"m1","tool":"pen",'
    b'"points":[[0.1,0.2]],"author":"s-1"},"by":"s-1","media_pts":90000}\n'
    b'{"ts":"2025-01-01T00:00:02.000+00:00","op":"update","annotation":{"id":"m1","tool":"pen",'
    b'"points":[[0.1,0.2],[0.3,0.4]],"author":"s-1"},"by":"s-1","media_pts":null}\n'
    b'{"ts":"2025-01-01T00:00:03.000+00:00","op":"remove","id":"m1","by":"s-1","media_pts":180000}\n'
    b'{"ts":"2025-01-01T00:00:04.000+00:00","op":"clear","by":"s-1","media_pts":270000}\n'
    b'{"ts":"2025-01-01T00:00:05.000+00:00","op":"freeze","by":"s-1",'
    b'"snapshot_id":"AAAAAAAAAAAAAAAA","media_pts":360000}\n'
    b'{"ts":"2025-01-01T00:00:06.000+00:00","op":"resume","by":"s-1","snapshot_id":null,'
    b'"media_pts":450000}\n'
)


async def test_old_logs_read_as_entries_and_are_written_back_byte_for_byte(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old.jsonl"
    old.write_bytes(OLD_LOG + b'{"media_pts": 1, "by": "s-1", "op": "clear", "ts": "x"}\n')
    entries = read_annotation_log(old)
    later = (LogOp.ARCHIVE, LogOp.RESTORE, LogOp.CHAT, LogOp.PLACEMENTS)  # came after these logs
    older = [op for op in LogOp if op not in later]
    assert [e.kind for e in entries] == [*older, LogOp.CLEAR]
    assert entries[0].media_pts == 90000 and entries[0].by == "s-1"
    assert entries[0].payload["annotation"]["points"] == [[0.1, 0.2]]
    assert entries[2].payload == {"id": "m1"} and entries[1].media_pts is None
    assert entries[4].payload == {"snapshot_id": "AAAAAAAAAAAAAAAA"}
    assert entries[-1] == LogEntry(LogOp.CLEAR, "x", 1, "s-1")
    log = AnnotationLog(tmp_path / "new.jsonl")
    for e in entries[:-1]:
        log.append(e)
    await log.close()
    assert log.path.read_bytes() == OLD_LOG


def test_lines_that_are_no_entry_are_skipped_and_wrong_types_read_as_absent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "annotations.jsonl"
    path.write_text(
        '["not", "an", "object"]\n{"op": "scribble", "ts": "t"}\n{"ts": "t"}\n'
        '{"op": "add", "ts": 5, "by": ["x"], "media_pts": true, "annotation": null}\n'
    )
    assert read_annotation_log(path) == [
        LogEntry(LogOp.ADD, None, None, None, {"annotation": None})
    ]


async def test_a_placements_entry_is_written_with_its_frame_and_read_back(tmp_path: Path) -> None:
    """Where the anchored marks were on the analysed frame of ``media_pts``: the replay and the
    annotated export move them with it."""
    marks = [
        {"author": "s-1", "id": "m1", "m": [1, 0, 0.1, 0, 1, 0], "confidence": 0.9, "lost": False}
    ]
    entry = LogEntry(
        LogOp.PLACEMENTS, "2025-01-01T00:00:00.000+00:00", 93000, None, {"marks": marks}
    )
    log = AnnotationLog(tmp_path / "annotations.jsonl")
    log.append(entry)
    await log.close()
    line = log.path.read_text()
    assert line.startswith(
        '{"ts":"2025-01-01T00:00:00.000+00:00","op":"placements","marks":[{"author":'
    )
    assert line.endswith('"by":null,"media_pts":93000}\n')
    assert read_annotation_log(log.path) == [entry]
