"""The consultation store keeps consultations and the full consent trail across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from persistence.database import Target
from signaling.db.store import (
    DEFAULT_TITLE,
    MAX_TEXT_LENGTH,
    SCHEMA,
    ConsultationStore,
    UnknownConsultation,
    new_consultation_id,
    valid_consultation_id,
)
from tests.postgres import BACKENDS, query, records_target


@pytest.fixture(params=BACKENDS)
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return records_target(request, tmp_path)


@pytest.fixture
async def store(db_path: Target) -> AsyncIterator[ConsultationStore]:
    store = ConsultationStore(db_path)
    yield store
    await store.close()


async def test_a_created_consultation_survives_a_restart(db_path: Target) -> None:
    first = ConsultationStore(db_path)
    created = await first.create("Knee arthroscopy", "h264")
    await first.close()

    second = ConsultationStore(db_path)
    try:
        assert await second.get(created.id) == created
    finally:
        await second.close()
    assert created.video_codec == "H264"
    assert created.consent is None


async def test_created_at_is_current_utc_iso8601(store: ConsultationStore) -> None:
    created = datetime.fromisoformat((await store.create("t", "VP8")).created_at)
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(created.tzinfo) - created) < timedelta(seconds=5)


async def test_ids_are_random_url_safe_and_valid(store: ConsultationStore) -> None:
    ids = {(await store.create("t", "VP8")).id for _ in range(20)}
    assert len(ids) == 20
    assert all(valid_consultation_id(cid) for cid in ids)


def test_no_id_starts_with_a_dash_a_command_line_would_take_for_an_option() -> None:
    ids = [new_consultation_id() for _ in range(2000)]  # 1 in 64 did: ~31 expected before
    assert all(valid_consultation_id(cid) and not cid.startswith("-") for cid in ids)
    assert len(set(ids)) == len(ids)


async def test_a_blank_title_gets_the_default(store: ConsultationStore) -> None:
    assert (await store.create("   ", "VP8")).title == DEFAULT_TITLE


async def test_consent_given_at_creation_is_a_paper_consent(store: ConsultationStore) -> None:
    created = await store.create("t", "VP8", consent_by=" Dr. Bat ", recorded_by="admin-1")
    assert created.consent is not None
    assert (created.consent.confirmed_by, created.consent.method) == ("Dr. Bat", "paper")
    assert created.consent.recorded_by == "admin-1"
    assert (await store.get(created.id)) == created


async def test_the_latest_consent_wins_and_earlier_ones_are_kept(
    store: ConsultationStore,
) -> None:
    created = await store.create("t", "VP8", consent_by="First", recorded_by="admin-1")
    latest = await store.record_consent(created.id, "Second", "page", "clinic-1")
    fetched = await store.get(created.id)
    assert fetched is not None and fetched.consent == latest
    history = await store.consent_history(created.id)
    assert [c.confirmed_by for c in history] == ["First", "Second"]
    assert [c.method for c in history] == ["paper", "page"]


async def test_consents_of_one_consultation_do_not_leak_into_another(
    store: ConsultationStore,
) -> None:
    a = await store.create("a", "VP8")
    b = await store.create("b", "VP8")
    await store.record_consent(a.id, "Only A", "page", "clinic-1")
    fetched = await store.get(b.id)
    assert fetched is not None and fetched.consent is None


async def test_consent_for_an_unknown_consultation_raises(store: ConsultationStore) -> None:
    with pytest.raises(UnknownConsultation):
        await store.record_consent("unknown123", "X", "page", "clinic-1")
    with pytest.raises(UnknownConsultation):
        await store.record_consent("bad id!", "X", "page", "clinic-1")


@pytest.mark.parametrize(
    ("confirmed_by", "method", "message"),
    [
        ("", "page", "must not be empty"),
        ("   ", "page", "must not be empty"),
        ("x" * (MAX_TEXT_LENGTH + 1), "page", "at most"),
        ("Dr. Bat", "email", "method"),
    ],
)
async def test_invalid_consent_is_refused(
    store: ConsultationStore, confirmed_by: str, method: str, message: str
) -> None:
    created = await store.create("t", "VP8")
    with pytest.raises(ValueError, match=message):
        await store.record_consent(created.id, confirmed_by, method, "clinic-1")
    assert await store.consent_history(created.id) == []


async def test_an_unknown_codec_or_overlong_title_is_refused(store: ConsultationStore) -> None:
    with pytest.raises(ValueError, match="codec"):
        await store.create("t", "AV1")
    with pytest.raises(ValueError, match="at most"):
        await store.create("x" * (MAX_TEXT_LENGTH + 1), "VP8")
    assert await store.list() == []


@pytest.mark.parametrize(
    "cid", ["", "short", "x" * 33, "has space1", "semi;colon", "' OR 1=1 --", "abcdef\n", "é" * 8]
)
async def test_malformed_ids_are_unknown_not_errors(store: ConsultationStore, cid: str) -> None:
    assert not valid_consultation_id(cid)
    assert await store.get(cid) is None


async def test_list_returns_every_consultation_oldest_first(store: ConsultationStore) -> None:
    created = [await store.create(f"c{i}", "VP8") for i in range(3)]
    await store.record_consent(created[1].id, "Dr. Bat", "page", "clinic-1")
    listed = await store.list()
    assert [c.id for c in listed] == [c.id for c in created]
    assert listed[1].consent is not None and listed[0].consent is None


async def test_concurrent_creates_are_all_stored(store: ConsultationStore) -> None:
    created = await asyncio.gather(*(store.create(f"c{i}", "VP8") for i in range(25)))
    assert {c.id for c in await store.list()} == {c.id for c in created}


async def test_to_json_matches_the_contract(store: ConsultationStore) -> None:
    created = await store.create("t", "VP8", consent_by="Dr. Bat", recorded_by="admin-1")
    as_json = created.to_json()
    assert set(as_json) == {"id", "title", "created_at", "video_codec", "consent"}
    assert set(as_json["consent"]) == {"confirmed_by", "confirmed_at", "method", "recorded_by"}
    assert (await store.create("u", "VP8")).to_json()["consent"] is None


async def test_the_schema_version_is_recorded(store: ConsultationStore, db_path: Target) -> None:
    version = "SELECT version FROM schema_versions WHERE owner = 'consultations'"
    expected = SCHEMA.version if isinstance(db_path, Path) else len(SCHEMA.postgres)
    assert query(db_path, version) == [(expected,)]
    if isinstance(db_path, Path):
        assert query(db_path, "PRAGMA journal_mode") == [("wal",)]


async def test_a_database_from_a_newer_version_is_refused(db_path: Target) -> None:
    await ConsultationStore(db_path).close()
    query(db_path, "UPDATE schema_versions SET version = version + 1 WHERE owner = 'consultations'")
    with pytest.raises(RuntimeError, match="newer"):
        ConsultationStore(db_path)


async def test_close_is_idempotent(db_path: Target) -> None:
    store = ConsultationStore(db_path)
    await store.close()
    await store.close()
