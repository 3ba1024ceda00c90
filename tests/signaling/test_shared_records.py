"""Shared records (issue 12, item 4): two nodes on one PostgreSQL database see each other's
consultations, consent, invites, patients and audit entries; the audit chain stays one chain with
a head file per node; two nodes migrating at once apply each step once; a broken connection is
replaced; a database that goes down makes ``/readyz`` say so (503), never a 500."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from persistence.database import DATABASE_ERRORS, describe, open_database
from persistence.postgres import PostgresDatabase
from recorder.index import SCHEMA as RECORDINGS
from signaling.app import create_app
from signaling.auth.grants import ANY_CONSULTATION, Grant, Role, new_identity
from signaling.cli import main
from signaling.db.audit import SCHEMA as AUDIT_SCHEMA
from signaling.db.audit import AuditAction, AuditRecord, AuditTrail
from signaling.db.audit_chain import ANCHOR_FILENAME, read_anchor
from signaling.db.invites import SCHEMA as INVITES
from signaling.db.patients import SCHEMA as PATIENTS
from signaling.db.patients import Patient, PatientRegister
from signaling.db.store import SCHEMA as CONSULTATIONS
from signaling.db.store import ConsultationStore
from signaling.keys import AUDIT, TOKENS
from signaling.settings import Settings
from tests.conftest import bearer
from tests.postgres import query, running_postgres

SCHEMAS = (CONSULTATIONS, INVITES, PATIENTS, AUDIT_SCHEMA, RECORDINGS)


def node(settings: Settings, url: str, name: str) -> Settings:
    """One node of the cluster: its own data dir, the shared database, the cluster's secret."""
    return replace(settings, data_dir=settings.data_dir.parent / name, database_url=url)


def admin_of(client: TestClient) -> dict[str, str]:
    grant = Grant.for_role(Role.ADMIN, ANY_CONSULTATION, new_identity(Role.ADMIN), 600)
    return bearer(client.app[TOKENS].issue(grant))


async def test_two_stores_share_consultations_consent_and_patients(postgres_url: str) -> None:
    a, b = ConsultationStore(postgres_url), ConsultationStore(postgres_url)
    patients_a, patients_b = PatientRegister(postgres_url), PatientRegister(postgres_url)
    try:
        made = await a.create("Knee", "VP8")
        await b.record_consent(made.id, "Dr. Bat", "page", "clinic-1")
        await patients_b.record(made.id, Patient(patient_id="UB-1"), "coordinator")
        seen = await a.get(made.id)
        assert seen is not None and seen.consent is not None
        assert seen.consent.confirmed_by == "Dr. Bat"
        assert [c.id for c in await b.list()] == [made.id]
        latest = await patients_a.latest(made.id)
        assert latest is not None and latest.patient.patient_id == "UB-1"
        await b.revoke_access(made.id)
        assert set(await a.access_revocations()) == {made.id}
    finally:
        for owner in (patients_a, patients_b, a, b):
            await owner.close()


async def test_two_nodes_share_consultations_invites_and_the_audit_trail(
    aiohttp_client, settings: Settings, postgres_url: str
) -> None:
    one = await aiohttp_client(create_app(node(settings, postgres_url, "one")))
    two = await aiohttp_client(create_app(node(settings, postgres_url, "two")))
    admin = admin_of(one)
    created = await one.post(
        "/api/consultations", json={"title": "Knee", "consent_by": "Dr. Bat"}, headers=admin
    )
    assert created.status == 201
    cid = (await created.json())["id"]
    seen = await two.get(f"/api/consultations/{cid}", headers=admin)
    assert seen.status == 200 and (await seen.json())["consent"]["confirmed_by"] == "Dr. Bat"

    invited = await one.post(
        f"/api/consultations/{cid}/invites", json={"role": "clinic"}, headers=admin
    )
    assert invited.status == 201
    code = (await invited.json())["link"].rpartition("/j/")[2]
    joined = await two.post("/api/join", json={"code": code})
    assert joined.status == 200, await joined.text()

    for n, client in enumerate((one, two, one, two)):
        entry = AuditRecord(cid, f"s-{n}", "Dr. Lee", "surgeon", AuditAction.VIEW, detail=str(n))
        await client.app[AUDIT].record(entry)
    trail = await two.get(f"/api/consultations/{cid}/audit", headers=admin)
    details = [e["detail"] for e in (await trail.json())["audit"] if e["action"] == "view"]
    assert details == ["0", "1", "2", "3"]
    for client in (one, two):  # one chain; each node's head file names its own newest entry
        assert (await client.app[AUDIT].verify()).ok
    heads = [read_anchor(settings.data_dir.parent / n / ANCHOR_FILENAME) for n in ("one", "two")]
    assert heads[0] is not None and heads[1] is not None and heads[0].seq < heads[1].seq


async def test_two_audit_writers_on_one_database_keep_one_chain(
    tmp_path: Path, postgres_url: str
) -> None:
    """Interleaved batches from two nodes: each reads the head under the advisory lock."""
    trails = [AuditTrail(postgres_url, tmp_path / f"{n}.json") for n in range(2)]
    futures = [
        trails[n % 2].submit(AuditRecord(f"cid{n % 3}xx", "s", "", "surgeon", AuditAction.VIEW))
        for n in range(400)
    ]
    seqs = await asyncio.gather(*futures)
    assert sorted(seqs) == list(range(1, 401))
    for trail in trails:
        verdict = await trail.verify()
        assert verdict.ok and verdict.entries == 400, verdict
        await trail.close()


async def test_nodes_migrating_at_once_apply_each_step_once(postgres_url: str) -> None:
    """Each PostgreSQL step creates its tables without IF NOT EXISTS: applied twice, it fails."""
    opened = await asyncio.gather(
        *(asyncio.to_thread(PostgresDatabase, postgres_url, *SCHEMAS) for _ in range(4))
    )
    for database in opened:
        await database.close()
    versions = dict(query(postgres_url, "SELECT owner, version FROM schema_versions"))
    assert versions == {schema.owner: len(schema.postgres) for schema in SCHEMAS}


async def test_a_broken_connection_is_replaced(postgres_url: str) -> None:
    store = ConsultationStore(postgres_url)
    try:
        made = await store.create("t", "VP8")
        query(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        with pytest.raises(DATABASE_ERRORS):
            await store.get(made.id)
        assert await store.get(made.id) == made
    finally:
        await store.close()


async def test_a_database_that_goes_down_makes_readyz_503(
    aiohttp_client, settings: Settings
) -> None:
    with running_postgres() as server:
        url = server.new_database()
        client = await aiohttp_client(create_app(replace(settings, database_url=url)))
        assert (await client.get("/readyz")).status == 200
        server.stop()
        async with asyncio.timeout(30):
            while (response := await client.get("/readyz")).status == 200:
                await asyncio.sleep(0.2)
        assert response.status == 503
        body = await response.json()
        assert body["checks"]["database"] == "the database cannot be read"
        assert "Traceback" not in await response.text()


def test_the_url_is_read_from_the_environment_and_its_password_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "postgresql://endolink:s3cret@db.example.org:5432/endolink"
    settings = Settings.from_env({"ENDOLINK_DATABASE_URL": url})
    assert settings.database_url == url
    assert "s3cret" not in repr(settings)
    assert describe(url) == "postgresql://endolink:***@db.example.org:5432/endolink"
    with pytest.raises(ValueError, match="postgresql://") as refused:
        Settings.from_env({"ENDOLINK_DATABASE_URL": "mysql://root:s3cret@host/db"})
    assert "s3cret" not in str(refused.value)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(psycopg.OperationalError) as failed:
        open_database("postgresql://endolink:s3cret@127.0.0.1:1/endolink")
    assert "s3cret" not in str(failed.value) and "s3cret" not in caplog.text


async def test_each_node_verifies_the_shared_trail_against_its_own_head_file(
    tmp_path: Path,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Node two has written nothing: its head file starts at the trail's head when it opens the
    trail. Cutting node one's newest entry is found by node one's file."""
    one, two = tmp_path / "one", tmp_path / "two"
    writer = AuditTrail(postgres_url, one / ANCHOR_FILENAME)
    for _ in range(5):
        await writer.record(AuditRecord("consultA", "s", "", "surgeon", AuditAction.VIEW))
    await writer.close()
    await AuditTrail(postgres_url, two / ANCHOR_FILENAME).close()
    monkeypatch.setenv("ENDOLINK_DATABASE_URL", postgres_url)
    for data_dir in (one, two):
        assert main(["audit", "verify", "--data-dir", str(data_dir)]) == 0
        assert "intact: 5 entries" in capsys.readouterr().out
    query(postgres_url, "DELETE FROM audit WHERE seq = 5")
    assert main(["audit", "verify", "--data-dir", str(one)]) == 1
    assert "entries at the end were deleted" in capsys.readouterr().out


def test_the_cli_works_on_the_shared_database_and_says_so_in_one_line_when_it_is_down(
    tmp_path: Path,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENDOLINK_DATABASE_URL", postgres_url)
    assert main(["consult", "create", "--json", "--data-dir", str(tmp_path / "one")]) == 0
    cid = json.loads(capsys.readouterr().out)["id"]
    assert query(postgres_url, "SELECT id FROM consultations") == [(cid,)]

    monkeypatch.setenv("ENDOLINK_DATABASE_URL", "postgresql://endolink:s3cret@127.0.0.1:1/x")
    assert main(["consult", "create", "--data-dir", str(tmp_path / "one")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("endolink: error: ") and err.count("\n") == 1, err
    assert "s3cret" not in err and "Traceback" not in err
