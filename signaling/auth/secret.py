"""The token signing secret: generated once per data dir, so a fresh install is secure by default
and tokens stay valid across restarts and between the server and the CLI."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from persistence.files import Sync, write_bytes_atomic
from signaling.auth.grants import TokenIssuer
from signaling.settings import Settings

logger = logging.getLogger(__name__)

SECRET_FILENAME = "secret.key"
SECRET_BYTES = 36  # 48 url-safe characters


def load_or_create_secret(data_dir: Path) -> str:
    """Read ``<data_dir>/secret.key``, creating it (mode 0600) if absent.

    The secret is written to a private temporary file and hard-linked into place: the link either
    creates the complete file or fails because another process won the race, so no reader ever
    sees a partial secret and nobody overwrites one already handed out.
    """
    path = data_dir / SECRET_FILENAME
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = secrets.token_urlsafe(SECRET_BYTES).encode("ascii")
        try:
            write_bytes_atomic(path, fresh, mode=0o600, overwrite=False, sync=Sync.NONE)
            logger.info("generated a new token signing secret in %s", path)
        except FileExistsError:
            pass
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < 32:
        raise ValueError(f"{path} holds no usable secret: delete it to generate a new one")
    return secret


def token_issuer(settings: Settings) -> TokenIssuer:
    """The issuer for these settings: the configured secret, else the data dir's own."""
    return TokenIssuer(settings.secret or load_or_create_secret(settings.data_dir))
