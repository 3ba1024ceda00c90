"""What the ``endolink`` command's tests share: running it in-process and reading its links."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from signaling.cli import main
from signaling.db.invites import InviteBook, InviteRecord
from signaling.db.store import DB_FILENAME
from signaling.settings import SETTINGS

LINK = re.compile(r"^(https?://[^/]+)/j/([0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4})$")


def clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENDOLINK_* variables of the developer's shell must not change what the tests see."""
    for variable, _ in SETTINGS:
        monkeypatch.delenv(variable, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def link_parts(link: str) -> tuple[str, str]:
    """A short invite link's base URL and code."""
    match = LINK.fullmatch(link)
    assert match, link
    return match[1], match[2]


def invite_of(data_dir: Path, link: str) -> InviteRecord:
    """The invite a printed link opens, as the server would find it."""

    async def find() -> InviteRecord | None:
        book = InviteBook(data_dir / DB_FILENAME)
        try:
            return await book.find(link_parts(link)[1])
        finally:
            await book.close()

    invite = asyncio.run(find())
    assert invite is not None, link
    return invite


def create_consultation(capsys: pytest.CaptureFixture[str], data_dir: Path) -> dict[str, Any]:
    code, out, _ = run(capsys, "consult", "create", "--json", "--data-dir", str(data_dir))
    assert code == 0
    return json.loads(out)
