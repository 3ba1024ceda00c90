"""Display names: given by the coordinator (API, CLI) or typed on a page (WebSocket ``auth``),
checked the same way everywhere, shown in presence, chat and on marks — and never logged."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signaling.auth.names import MAX_NAME_LENGTH, InvalidName, display_name
from signaling.db.store import Consultation
from signaling.ws.frames import CLOSE_BAD_NAME
from tests.conftest import MakeToken, error_of, join
from tests.signaling.test_cli import invite_of, run
from tests.signaling.test_websocket import closed_with, next_of

DISTINCTIVE = "Dr Zolbayar Quixotic-Öyun 내시경"
MARK = {
    "id": "m1",
    "tool": "text",
    "text": "내시경 Дуран",
    "color": "#ffcc00",
    "width": 0.01,
    "points": [[0.4, 0.5]],
}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("x" * (MAX_NAME_LENGTH + 1), f"longer than {MAX_NAME_LENGTH}"),
        ("Dr\nKim", "control characters"),
        ("Dr\x07Kim", "control characters"),
        (42, "must be text"),
    ],
)
def test_bad_names_are_refused_with_a_reason_that_does_not_quote_them(
    value: object, reason: str
) -> None:
    with pytest.raises(InvalidName, match=reason) as caught:
        display_name(value)
    assert "Kim" not in str(caught.value)


def test_names_are_trimmed_and_may_be_any_script() -> None:
    assert display_name("  Дуран Бат  ") == "Дуран Бат"
    assert display_name("김 " + "x" * (MAX_NAME_LENGTH - 2)) == "김 " + "x" * (MAX_NAME_LENGTH - 2)


async def test_a_new_consultation_names_its_links(
    client: TestClient, admin: dict[str, str]
) -> None:
    body = {"clinic_name": " Ward 3 nurse ", "surgeon_name": "Dr Kim"}
    created = await client.post("/api/consultations", json=body, headers=admin)
    assert created.status == 201, await created.text()
    links = (await created.json())["links"]
    # The replay link is the surgeon's: the audit trail names who replayed. No name: the page asks.
    expected = {"clinic": "Ward 3 nurse", "surgeon": "Dr Kim", "replay": "Dr Kim", "observer": ""}
    for key, name in expected.items():
        assert await name_of(client, (await join(client, links[key]))["token"]) == name, key


async def name_of(client: TestClient, token: str) -> str:
    """The name a token carries, as the pages learn it (``GET /api/session``)."""
    session = await client.get("/api/session", headers={"Authorization": f"Bearer {token}"})
    name: str = (await session.json())["name"]
    return name


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"surgeon_name": "x" * 65}, "surgeon_name is longer than 64 characters"),
        (
            {"clinic_name": "Ward\t3"},
            "clinic_name contains control characters (such as a line break or tab)",
        ),
        ({"clinic_name": "  "}, "clinic_name is empty"),
        ({"observer_name": 7}, "observer_name must be text"),
    ],
)
async def test_bad_names_in_the_api_are_a_400_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    consultation: Consultation,
    body: dict[str, Any],
    reason: str,
) -> None:
    response = await client.post("/api/consultations", json=body, headers=admin)
    assert await error_of(response, 400) == "bad-request"
    assert (await response.json())["reason"] == reason
    invite = await client.post(
        f"/api/consultations/{consultation.id}/invites",
        json={"role": "clinic", "name": "x" * 65},
        headers=admin,
    )
    assert await error_of(invite, 400) == "bad-request"
    assert (await invite.json())["reason"] == "name is longer than 64 characters"


async def test_an_invite_carries_its_name(
    client: TestClient, admin: dict[str, str], consultation: Consultation
) -> None:
    made = await client.post(
        f"/api/consultations/{consultation.id}/invites",
        json={"role": "observer", "name": "Student Bold"},
        headers=admin,
    )
    assert made.status == 201
    token = (await join(client, (await made.json())["link"]))["token"]
    assert await name_of(client, token) == "Student Bold"


async def auth_join(
    client: TestClient, cid: str, token: str, name: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """A browser-style join: the token (and the typed name) in the first message."""
    ws = await client.ws_connect(f"/ws/{cid}")
    await ws.send_json({"type": "auth", "token": token, **({"name": name} if name else {})})
    welcome = await next_of(ws, "welcome")
    await next_of(ws, "chat_history")
    return ws, welcome


async def test_a_name_typed_on_the_page_is_used_for_presence_chat_and_marks(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic, _ = await auth_join(client, cid, make_token("clinic", cid, name="Ward 3"))
    surgeon, welcome = await auth_join(client, cid, make_token("surgeon", cid), "  Dr Дуран ")
    assert welcome["you"]["name"] == "Dr Дуран"
    presence = await next_of(clinic, "presence")
    assert [p["name"] for p in presence["participants"]] == ["Ward 3", "Dr Дуран"]
    await surgeon.send_json({"type": "chat", "text": "hello"})
    assert (await next_of(clinic, "chat"))["name"] == "Dr Дуран"
    await surgeon.send_json({"type": "annotation", "op": "add", "annotation": MARK})
    mark = (await next_of(clinic, "annotation"))["annotation"]
    assert (mark["author"].startswith("surgeon-"), mark["author_name"]) == (True, "Dr Дуран")
    # a name on the link wins over a typed one
    ward, welcome = await auth_join(client, cid, make_token("clinic", cid, name="Ward 3"), "Other")
    assert welcome["you"]["name"] == "Ward 3"
    for ws in (clinic, surgeon, ward):
        await ws.close()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("x" * 65, "auth.name is longer than 64 characters"),
        ("Dr\u0000Kim", "auth.name contains control characters (such as a line break or tab)"),
    ],
)
async def test_a_bad_typed_name_closes_with_4422_and_disturbs_nobody(
    client: TestClient, make_token: MakeToken, consultation: Consultation, name: str, reason: str
) -> None:
    cid = consultation.id
    other, _ = await auth_join(client, cid, make_token("clinic", cid))
    ws = await client.ws_connect(f"/ws/{cid}")
    await ws.send_json({"type": "auth", "token": make_token("surgeon", cid), "name": name})
    assert await closed_with(ws) == (CLOSE_BAD_NAME, reason)
    await other.send_json({"type": "ping"})
    await next_of(other, "pong")
    assert not other.closed
    await other.close()


def test_the_cli_names_links_and_refuses_bad_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    code, out, err = run(
        capsys,
        "consult",
        "create",
        "--clinic-name",
        "Ward 3",
        "--surgeon-name",
        "Dr Kim",
        "--data-dir",
        data_dir,
    )
    assert code == 0, err
    links = dict(line.split(": ", 1) for line in out.splitlines() if "/j/" in line)
    links = {role.strip(): link.strip() for role, link in links.items()}
    assert invite_of(tmp_path / "data", links["clinic"]).name == "Ward 3"
    assert invite_of(tmp_path / "data", links["surgeon"]).name == "Dr Kim"
    assert invite_of(tmp_path / "data", links["replay"]).name == "Dr Kim"
    assert invite_of(tmp_path / "data", links["observer"]).name == ""
    code, _, err = run(
        capsys, "consult", "create", "--surgeon-name", "x" * 65, "--data-dir", data_dir
    )
    assert code == 2
    assert "argument --surgeon-name: name is longer than 64 characters" in err
    code, _, err = run(capsys, "consult", "create", "--clinic-name", "a\tb", "--data-dir", data_dir)
    assert (code, "--clinic-name: name contains control characters" in err) == (2, True)


async def test_names_never_reach_the_logs(
    client: TestClient,
    admin: dict[str, str],
    make_token: MakeToken,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A whole flow with a distinctive name: created, invited, joined, typed, chatted, drawn,
    refused — and not one log line carries it."""
    caplog.set_level(logging.DEBUG)
    created = await client.post(
        "/api/consultations",
        json={"clinic_name": DISTINCTIVE, "surgeon_name": DISTINCTIVE},
        headers=admin,
    )
    answer = await created.json()
    cid = answer["id"]
    await client.post(
        f"/api/consultations/{cid}/invites",
        json={"role": "observer", "name": DISTINCTIVE},
        headers=admin,
    )
    await client.post("/api/consultations", json={"clinic_name": DISTINCTIVE * 3}, headers=admin)
    clinic, _ = await auth_join(
        client, cid, (await join(client, answer["links"]["clinic"]))["token"]
    )
    observer_token = (await join(client, answer["links"]["observer"]))["token"]
    observer, _ = await auth_join(client, cid, observer_token, DISTINCTIVE)
    await observer.send_json({"type": "chat", "text": "hi"})
    await next_of(clinic, "chat")
    await observer.send_json({"type": "annotation", "op": "add", "annotation": MARK})
    await next_of(observer, "error")  # observers may not draw: refused, and logged
    await clinic.send_json({"type": "annotation", "op": "add", "annotation": MARK})
    await next_of(clinic, "annotation")
    bad = await client.ws_connect(f"/ws/{cid}")
    await bad.send_json({"type": "auth", "token": observer_token, "name": DISTINCTIVE + "\x07!"})
    await closed_with(bad)
    await observer.close()
    await clinic.close()
    assert caplog.records, "the flow logged nothing at all: the check would prove nothing"
    for part in ("Zolbayar", "Quixotic", "내시경"):
        assert part not in caplog.text
