"""The tamper-evident audit trail: what a real consultation writes into it, that no token ever
lands there, that refused tokens cannot flood it, and that ``endolink audit verify`` finds an
edited, inserted or deleted entry and a cut-off tail in a real database file."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from persistence.database import Target
from persistence.sqlite import Database, Migrations
from recorder.snapshots import SnapshotStore
from signaling.cli import main
from signaling.db import audit, audit_chain
from signaling.db.audit import AuditAction, AuditRecord, AuditTrail
from signaling.db.audit_chain import ANCHOR_FILENAME, HASHED_COLUMNS, entry_hash
from signaling.db.store import DB_FILENAME, Consultation, database_of
from signaling.keys import AUDIT, REFUSED_TOKENS, SETTINGS
from signaling.settings import Settings
from tests.conftest import MakeToken, bearer
from tests.peers import publisher
from tests.postgres import BACKENDS
from tests.postgres import query as run_sql
from tests.signaling.test_snapshots import PNG_BYTES, upload
from tests.signaling.test_websocket import join, next_of
from tests.signaling.test_websocket_annotations import add

CIDS = ("consultA", "consultB")


async def write_trail(data_dir: Path, entries: int = 10) -> None:
    """``entries`` entries alternating between two consultations, plus a refused token."""
    data_dir.mkdir(parents=True, exist_ok=True)
    trail = AuditTrail(records(data_dir), data_dir / ANCHOR_FILENAME)
    for n in range(entries - 1):
        cid = CIDS[n % 2]
        await trail.record(
            AuditRecord(cid, f"surgeon-{n}", "Dr. Kim", "surgeon", AuditAction.VIEW, detail="x")
        )
    refused = AuditRecord(None, "", "", "", AuditAction.REFUSED_TOKEN, detail="from 1.2.3.4")
    await trail.record(refused)
    await trail.close()


def verify(data_dir: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["audit", "verify", "--data-dir", str(data_dir), *extra])
    return code, capsys.readouterr().out


def records(data_dir: Path) -> Target:
    """The trail's database as the CLI finds it: ``ENDOLINK_DATABASE_URL``, else the data dir's."""
    return database_of(Settings.from_env(data_dir=data_dir))


def edit(data_dir: Path, statement: str, *parameters: Any) -> None:
    run_sql(records(data_dir), statement, parameters)


def hashed(data_dir: Path, seq: int) -> tuple[Any, ...]:
    select = f"SELECT {', '.join(HASHED_COLUMNS)} FROM audit WHERE seq = ?"
    return run_sql(records(data_dir), select, (seq,))[0]


@pytest.fixture(params=BACKENDS)
async def trail_dir(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A data dir with a trail of 10 entries, in its SQLite file or (``ENDOLINK_DATABASE_URL``,
    which the CLI reads too) in PostgreSQL with the head file in the data dir."""
    if request.param == "postgresql":
        monkeypatch.setenv("ENDOLINK_DATABASE_URL", request.getfixturevalue("postgres_url"))
    data_dir = tmp_path / "data"
    await write_trail(data_dir)
    return data_dir


async def test_an_intact_trail_verifies_and_names_its_head(
    trail_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify(trail_dir, capsys, "--consultation", CIDS[0])
    assert code == 0, out
    assert "intact: 10 entries, head entry 10 " in out
    assert f"consultation {CIDS[0]}: 5 entries" in out


@pytest.mark.parametrize(
    ("statement", "finding"),
    [
        (
            "UPDATE audit SET name = 'Dr. Nobody' WHERE seq = 4",
            "first bad entry 4: entry 4 was changed",
        ),
        ("DELETE FROM audit WHERE seq = 6", "first bad entry 7: entry 7 does not follow entry 5"),
        (
            "INSERT INTO audit (seq, consultation_id, at, identity, role, action, hash)"
            " VALUES (11, 'consultA', '2026-01-01T00:00:00Z', 'x', 'surgeon', 'view', 'f00')",
            "first bad entry 11: entry 11 was changed",
        ),
        ("DELETE FROM audit WHERE seq = 10", "the trail ends at entry 9 but entry 10 was written"),
        ("DELETE FROM audit WHERE seq > 7", "the trail ends at entry 7 but entry 10 was written"),
    ],
    ids=["edited", "deleted", "inserted-at-the-end", "last-deleted", "tail-cut"],
)
async def test_a_changed_database_file_is_found(
    trail_dir: Path, capsys: pytest.CaptureFixture[str], statement: str, finding: str
) -> None:
    edit(trail_dir, statement)
    code, out = verify(trail_dir, capsys)
    assert code == 1 and finding in out


async def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link(
    trail_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fields = list(hashed(trail_dir, 4))
    fields[HASHED_COLUMNS.index("name")] = "Dr. Nobody"
    edit(
        trail_dir,
        "UPDATE audit SET name = ?, hash = ? WHERE seq = 4",
        fields[4],
        entry_hash(fields),
    )
    code, out = verify(trail_dir, capsys)
    assert code == 1 and "first bad entry 5: entry 5 does not follow entry 4" in out


async def test_an_inserted_entry_is_found_even_when_well_formed(
    trail_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The forger chains the new entry to entry 5 and renumbers those after it: their numbers
    are hashed, so the first renumbered entry no longer matches its hash."""
    for seq in range(10, 5, -1):
        edit(trail_dir, "UPDATE audit SET seq = seq + 1 WHERE seq = ?", seq)
    previous, own = (  # entry 4 is the consultation's newest before it
        run_sql(records(trail_dir), "SELECT hash FROM audit WHERE seq = ?", (seq,))[0][0]
        for seq in (5, 4)
    )
    fields = [6, CIDS[1], "2026-01-01T00:00:00Z", "x", "Dr. X", "surgeon", "view", None]
    fields += [None, 1, previous, own]
    columns = ", ".join((*HASHED_COLUMNS, "hash"))
    marks = ", ".join("?" * (len(fields) + 1))
    edit(trail_dir, f"INSERT INTO audit ({columns}) VALUES ({marks})", *fields, entry_hash(fields))
    code, out = verify(trail_dir, capsys)
    assert code == 1 and "first bad entry 7: entry 7 was changed" in out


async def test_a_missing_head_file_is_a_finding(
    trail_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (trail_dir / ANCHOR_FILENAME).stat().st_mode & 0o777 == 0o600
    (trail_dir / ANCHOR_FILENAME).unlink()
    code, out = verify(trail_dir, capsys)
    assert code == 1 and "head file (audit-head.json) is missing" in out


async def test_a_consultation_chain_link_is_checked_too(
    trail_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Moving an entry to another consultation (hash recomputed, global link kept)."""
    fields = list(hashed(trail_dir, 10 - 1))
    fields[1] = CIDS[1] if fields[1] == CIDS[0] else CIDS[0]
    edit(
        trail_dir,
        "UPDATE audit SET consultation_id = ?, hash = ? WHERE seq = 9",
        fields[1],
        entry_hash(fields),
    )
    code, out = verify(trail_dir, capsys)
    assert code == 1 and "entry 9 does not follow its consultation's previous entry" in out


async def test_the_trail_goes_on_after_a_restart_and_entries_of_an_old_database_get_chained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    await write_trail(data_dir, 4)
    await write_trail(data_dir, 4)
    assert verify(data_dir, capsys)[0] == 0
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(data_dir / DB_FILENAME, old / DB_FILENAME)
    # What an EndoLink before the chain left: no hashes, no head file.
    edit(old, "UPDATE audit SET prev_hash = NULL, consultation_prev_hash = NULL, hash = NULL")
    assert verify(old, capsys)[0] == 1
    await AuditTrail(old / DB_FILENAME).close()
    code, out = verify(old, capsys)
    assert code == 0 and "intact: 8 entries" in out


async def test_a_trail_of_schema_step_2_keeps_its_chains_and_takes_the_records_actions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Step 3 rebuilds the table for ``dicom-export``, ``fhir`` and ``patient``: every row and
    hash is carried over, so the trail still verifies, and the new actions can be written."""
    data_dir = tmp_path / "data"
    await write_trail(data_dir, 5)
    step2 = tmp_path / "step2"
    step2.mkdir()
    database = Database(step2 / DB_FILENAME, Migrations("audit", audit.SCHEMA.steps[:2], (3,)))
    await database.close()
    with sqlite3.connect(step2 / DB_FILENAME) as db:
        db.execute("ATTACH DATABASE ? AS now", (str(data_dir / DB_FILENAME),))
        db.execute("INSERT INTO audit SELECT * FROM now.audit")
    shutil.copy(data_dir / ANCHOR_FILENAME, step2 / ANCHOR_FILENAME)
    trail = AuditTrail(step2 / DB_FILENAME)
    for action in (AuditAction.DICOM_EXPORT, AuditAction.FHIR, AuditAction.PATIENT):
        await trail.record(AuditRecord(CIDS[0], "admin-1", "", "admin", action, "rec-1"))
    await trail.close()
    code, out = verify(step2, capsys)
    assert code == 0 and "intact: 8 entries" in out


async def test_writes_are_batched_and_in_order(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / DB_FILENAME)
    records = [
        AuditRecord(CIDS[n % 2], "s", "", "surgeon", AuditAction.ANNOTATION, detail=str(n))
        for n in range(2000)
    ]
    started = time.perf_counter()
    futures = [trail.submit(record) for record in records]
    seqs = await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    assert seqs == list(range(1, 2001))
    assert (await trail.verify()).ok
    page = await trail.trail(CIDS[0], after=0, limit=3)
    assert [e.detail for e in page] == ["0", "2", "4"]
    await trail.close()
    print(f"2000 audit entries in {elapsed:.3f} s: {2000 / elapsed:.0f} entries/s")


async def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    """The server and, say, a CLI appending at the same time: heads are read under the lock."""
    server, cli = AuditTrail(tmp_path / DB_FILENAME), AuditTrail(tmp_path / DB_FILENAME)
    for n in range(20):
        writer = (server, cli)[n % 3 == 0]
        record = AuditRecord(CIDS[n % 2], "s", "", "surgeon", AuditAction.VIEW, detail=str(n))
        await writer.record(record)
    verdict = await server.verify()
    assert verdict.ok and verdict.entries == 20, verdict
    for trail in (server, cli):
        await trail.close()


# -- what a real consultation writes -----------------------------------------------------------


async def audit_of(client: TestClient, cid: str, admin: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"/api/consultations/{cid}/audit", headers=admin)
    assert response.status == 200
    return dict(await response.json())


async def test_a_consultation_is_audited_from_join_to_leave_without_a_token(
    client: TestClient,
    consultation: Consultation,
    make_token: MakeToken,
    admin: dict[str, str],
) -> None:
    cid = consultation.id
    surgeon = make_token("surgeon", cid, name="Dr. Lee")
    clinic = make_token("clinic", cid, name="Nurse Bat")
    ws, welcome = await join(client, cid, surgeon)
    endpoint = str(client.make_url(f"/whip/{cid}"))
    async with publisher(endpoint, clinic):
        await wait_until_feed(ws, "live")
        await ws.send_json(add())
        await next_of(ws, "annotation")
        await ws.send_json(add(id="stroke-1", points=[[0.5, 0.5], [0.6, 0.6]]) | {"op": "update"})
        await next_of(ws, "annotation")
        assert (await upload(client, cid, surgeon)).status == 201
        snapshot = await next_of(ws, "snapshot")
        await ws.send_json(
            {"type": "freeze", "frozen": True, "snapshot_id": snapshot["snapshot"]["id"]}
        )
        await next_of(ws, "freeze")
        await ws.send_json({"type": "annotation", "op": "undo"})
        await next_of(ws, "annotation")
        await ws.send_json({"type": "freeze", "frozen": False})
        await next_of(ws, "freeze")
    await wait_until_feed(ws, "offline")
    await ws.close()

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the leave is written once the server saw the close
        audit = await audit_of(client, cid, admin)
        if {"leave", "publish-end"} <= {row["action"] for row in audit["audit"]}:
            break
        await asyncio.sleep(0.05)
    actions = [(r["action"], r["role"]) for r in audit["audit"]]
    assert actions == [
        ("join", "surgeon"),
        ("publish", "clinic"),
        ("annotation", "surgeon"),  # the add; its update is not audited
        ("snapshot", "surgeon"),
        ("freeze", "surgeon"),
        ("annotation", "surgeon"),  # the undo, announced as a remove
        ("unfreeze", "surgeon"),
        ("publish-end", "clinic"),
        ("leave", "surgeon"),
    ]
    rows = audit["audit"]
    assert rows[0]["name"] == "Dr. Lee" and rows[1]["name"] == "Nurse Bat"
    assert rows[0]["identity"] == welcome["you"]["identity"]
    assert rows[2]["detail"] == "add pen stroke-1" and rows[5]["detail"] == "remove stroke-1"
    assert rows[1]["detail"].startswith("feed endoscope session ")
    assert audit["verified"]["ok"] is True and audit["next"] is None
    with sqlite3.connect(client.app[SETTINGS].data_dir / DB_FILENAME) as db:
        everything = " ".join(str(v) for row in db.execute("SELECT * FROM audit") for v in row)
    for token in (surgeon, clinic, admin["Authorization"].split()[1]):
        for part in token.split("."):
            assert part not in everything
    paged = await client.get(
        f"/api/consultations/{cid}/audit?after={rows[2]['seq']}&limit=2", headers=admin
    )
    body = await paged.json()
    assert [r["seq"] for r in body["audit"]] == [rows[3]["seq"], rows[4]["seq"]]
    assert body["next"] == rows[4]["seq"]
    for query in ("after=-1", "limit=0", "limit=1001", "after=9999999999999", "limit=x"):
        bad = await client.get(f"/api/consultations/{cid}/audit?{query}", headers=admin)
        assert bad.status == 400, query


async def test_an_audit_page_hashes_only_the_entries_added_since_the_last_check(
    client: TestClient,
    consultation: Consultation,
    admin: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Paging never re-hashes the whole trail; an edit to an entry checked before is found by
    ``endolink audit verify`` (and the next full check), not by the page."""
    trail, cid = client.app[AUDIT], consultation.id

    async def add_entries(count: int) -> None:
        for n in range(count):
            record = AuditRecord(cid, f"viewer-{n}", "", "observer", AuditAction.VIEW)
            await trail.record(record)

    await add_entries(40)
    first = (await audit_of(client, cid, admin))["verified"]
    assert first["ok"] and first["complete"], first
    hashes = 0
    real_hash = audit_chain.entry_hash

    def counted(fields: Any) -> str:
        nonlocal hashes
        hashes += 1
        return real_hash(fields)

    monkeypatch.setattr(audit_chain, "entry_hash", counted)
    await add_entries(7)
    second = (await audit_of(client, cid, admin))["verified"]
    assert hashes == 7
    assert second["ok"] and second["complete"] and second["entries"] == first["entries"] + 7

    monkeypatch.setattr(audit, "VERIFY_CAP", 5)  # the work per page is capped
    await add_entries(8)
    capped = (await audit_of(client, cid, admin))["verified"]
    assert hashes == 12 and not capped["complete"] and capped["ok"]
    assert capped["head"]["seq"] == second["head"]["seq"] + 5
    rest = (await audit_of(client, cid, admin))["verified"]
    assert hashes == 15 and rest["complete"] and rest["ok"]

    data_dir = client.app[SETTINGS].data_dir
    edit(data_dir, "UPDATE audit SET identity = 'someone-else' WHERE seq = 3")
    assert (await audit_of(client, cid, admin))["verified"]["ok"]  # checked before: not re-hashed
    code, out = verify(data_dir, capsys)
    assert code == 1 and "entry 3 was changed" in out
    full = await trail.verify()
    assert not full.ok and full.seq == 3
    checking = asyncio.get_running_loop().create_task(trail.check_all())  # the periodic pass
    deadline = time.monotonic() + 5
    while (page := (await audit_of(client, cid, admin))["verified"])["ok"]:
        assert time.monotonic() < deadline, "the full check never found the edit"
        await asyncio.sleep(0.02)
    checking.cancel()
    assert page["seq"] == 3 and "entry 3 was changed" in page["problem"]


async def wait_until_feed(ws: Any, state: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        feed = await next_of(ws, "feed", timeout=10)
        if feed["feed"] == "endoscope" and feed["state"] == state:
            return
    raise AssertionError(f"the endoscope feed never went {state}")


async def test_refused_tokens_are_counted_not_flooded_into_the_trail(
    client: TestClient, consultation: Consultation
) -> None:
    for _ in range(20):  # within the failure budget per address (30: then 429, test_limits.py)
        response = await client.get(
            f"/api/consultations/{consultation.id}", headers=bearer("not-a-token")
        )
        assert response.status == 401
    ws = await client.ws_connect(f"/ws/{consultation.id}")
    await ws.send_json({"type": "auth", "token": "guess"})
    assert (await ws.receive(timeout=5)).type.name in ("CLOSE", "CLOSED")
    client.app[REFUSED_TOKENS].flush()
    await client.app[AUDIT].record(
        AuditRecord(None, "", "", "", AuditAction.REFUSED_TOKEN, detail="barrier")
    )

    def refused(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return db.execute(
            "SELECT consultation_id, count, detail FROM audit WHERE action = 'refused-token'"
            " ORDER BY seq"
        ).fetchall()

    with sqlite3.connect(client.app[SETTINGS].data_dir / DB_FILENAME) as db:
        rows = refused(db)
    assert rows == [
        (None, 1, "from 127.0.0.1: GET /api/consultations/{cid}"),
        (None, 20, "from 127.0.0.1: GET /ws/{cid} (more within a minute)"),
        (None, 1, "barrier"),
    ]


async def test_a_snapshot_changed_on_disk_is_found_against_its_audit_entry(
    client: TestClient,
    consultation: Consultation,
    make_token: MakeToken,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ``snapshot`` entry carries the PNG's SHA-256; ``audit verify --files`` re-hashes."""
    surgeon, data_dir = make_token("surgeon", consultation.id), client.app[SETTINGS].data_dir
    stored = await upload(client, consultation.id, surgeon)
    assert stored.status == 201
    sid = (await stored.json())["id"]
    with sqlite3.connect(data_dir / DB_FILENAME) as db:
        (detail,) = db.execute("SELECT detail FROM audit WHERE action = 'snapshot'").fetchone()
    assert detail == f"snapshot {sid} sha256 {hashlib.sha256(PNG_BYTES).hexdigest()}"
    code, out = verify(data_dir, capsys, "--files")
    assert code == 0 and "snapshot files: 1 of 1 match the trail" in out

    png = SnapshotStore(data_dir).path(consultation.id, sid)
    png.write_bytes(PNG_BYTES[:-1] + bytes([PNG_BYTES[-1] ^ 1]))  # one flipped bit
    code, out = verify(data_dir, capsys, "--files")
    assert code == 1 and f"snapshot {sid} of consultation {consultation.id}: MODIFIED" in out
    assert verify(data_dir, capsys)[0] == 0  # the chain itself is intact: --files looks further
    png.unlink()
    code, out = verify(data_dir, capsys, "--files", "--json")
    assert code == 1 and '"status": "MISSING"' in out


def test_a_data_directory_no_server_ran_on_has_no_trail_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["consult", "create", "--title", "x", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    code, out = verify(tmp_path, capsys)
    assert code == 0 and out.startswith("no audit trail yet")
    (tmp_path / ANCHOR_FILENAME).write_text("{}")  # a head file, but the table is gone
    code, out = verify(tmp_path, capsys)
    assert code == 1 and "NOT intact: the audit table is missing" in out
