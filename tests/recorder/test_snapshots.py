"""The snapshot store: what it writes where, how it lists, and what it refuses (the HTTP routes
are tests/signaling/test_snapshots.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recorder import snapshots
from recorder.snapshots import SNAPSHOT_ID, STILL, SnapshotStore, TooManySnapshots

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


async def test_a_snapshot_is_its_png_and_its_metadata_under_the_consultation(
    tmp_path: Path,
) -> None:
    store = SnapshotStore(tmp_path)
    snapshot = await store.add("c1", "surgeon-1", PNG, at=1_700_000_000.0)
    assert SNAPSHOT_ID.fullmatch(snapshot.id)
    assert snapshot.created_at == "2023-11-14T22:13:20.000+00:00"
    directory = tmp_path / "consultations" / "c1" / "snapshots"
    assert store.path("c1", snapshot.id) == directory / f"{snapshot.id}.png"
    assert (directory / f"{snapshot.id}.png").read_bytes() == PNG
    assert json.loads((directory / f"{snapshot.id}.json").read_text()) == snapshot.to_json()
    assert sorted(p.name for p in directory.iterdir()) == [
        f"{snapshot.id}.json",
        f"{snapshot.id}.png",
    ]
    assert await store.kind("c1", snapshot.id) == "snapshot"
    assert await store.kind("c2", snapshot.id) is None
    assert await store.list("c2") == []


async def test_the_list_is_oldest_first_and_skips_unreadable_metadata(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    later = await store.add("c1", "s", PNG, at=2000.0)
    earlier = await store.add("c1", "s", PNG, at=1000.0)
    (store.directory("c1") / "broken.json").write_text("{not json")
    (store.directory("c1") / "alien.json").write_text('{"id": "x", "who": "?"}')
    assert await store.list("c1") == [earlier, later]


async def test_ids_and_consultations_are_checked_before_they_become_paths(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for bad in ("../../etc/passwd", "short", "A" * 15 + "/"):
        with pytest.raises(ValueError):
            store.path("c1", bad)
    with pytest.raises(ValueError):
        await store.add("../c1", "s", PNG)


async def test_a_full_consultation_refuses_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "MAX_SNAPSHOTS", 2)
    store = SnapshotStore(tmp_path)
    await store.add("c1", "s", PNG)
    await store.add("c1", "s", PNG)
    with pytest.raises(TooManySnapshots):
        await store.add("c1", "s", PNG)
    assert len(await store.list("c1")) == 2
    await store.add("c2", "s", PNG)  # per consultation


async def test_stills_have_their_own_limit_and_never_use_up_the_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "MAX_SNAPSHOTS", 2)
    monkeypatch.setattr(snapshots, "MAX_STILLS", 3)
    store = SnapshotStore(tmp_path)
    for _ in range(3):
        await store.add("c1", "clinic", b"\xff\xd8\xff\xd9", kind=STILL)
    with pytest.raises(TooManySnapshots, match="at most 3 stills"):
        await store.add("c1", "clinic", b"\xff\xd8\xff\xd9", kind=STILL)
    await store.add("c1", "surgeon", PNG)  # the surgeon's snapshot button still works
    await store.add("c1", "surgeon", PNG)
    with pytest.raises(TooManySnapshots, match="at most 2 snapshots"):
        await store.add("c1", "surgeon", PNG)
    assert [s.kind for s in await store.list("c1")].count(STILL) == 3
