"""The signing secret is made once, privately, and then always read back unchanged."""

from __future__ import annotations

import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from signaling.auth.grants import Grant, Role, TokenIssuer
from signaling.auth.secret import SECRET_FILENAME, load_or_create_secret, token_issuer
from signaling.settings import Settings


def test_a_new_secret_is_48_url_safe_characters_readable_only_by_the_owner(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "fresh" / "data"
    secret = load_or_create_secret(data_dir)
    assert re.fullmatch(r"[A-Za-z0-9_-]{48}", secret)
    assert stat.S_IMODE((data_dir / SECRET_FILENAME).stat().st_mode) == 0o600
    assert [p.name for p in data_dir.iterdir()] == [SECRET_FILENAME]  # no temporary file left


def test_the_secret_is_read_back_not_regenerated(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path) == load_or_create_secret(tmp_path)


def test_an_existing_secret_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILENAME).write_text("k" * 40 + "\n")
    assert load_or_create_secret(tmp_path) == "k" * 40


def test_concurrent_first_runs_agree_on_one_secret(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_or_create_secret(tmp_path), range(16)))
    assert len(secrets) == 1


def test_a_truncated_secret_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILENAME).write_text("short")
    with pytest.raises(ValueError, match="no usable secret"):
        load_or_create_secret(tmp_path)


def test_a_configured_secret_is_used_and_no_file_is_made(tmp_path: Path) -> None:
    issuer = token_issuer(Settings(data_dir=tmp_path, secret="c" * 40))
    token = issuer.issue(Grant.for_role(Role.CLINIC, "abcdef1", "clinic-1", 60))
    assert TokenIssuer("c" * 40).verify(token).identity == "clinic-1"
    assert not (tmp_path / SECRET_FILENAME).exists()


def test_without_a_configured_secret_the_data_dir_secret_signs(tmp_path: Path) -> None:
    issuer = token_issuer(Settings(data_dir=tmp_path))
    token = issuer.issue(Grant.for_role(Role.CLINIC, "abcdef1", "clinic-1", 60))
    assert TokenIssuer(load_or_create_secret(tmp_path)).verify(token).identity == "clinic-1"
