"""TURN credentials minted per participant: coturn's ``use-auth-secret`` (the "TURN REST API").

coturn and EndoLink share one secret (coturn's ``static-auth-secret``); nothing else is shared and
coturn keeps no user list. For each participant the server mints

* username ``<expiry unix time>:<identity>`` — the identity is the grant's opaque id
  (``clinic-1a2b3c4d``), never a name: coturn writes user names into its logs;
* password ``base64(HMAC-SHA1(secret, username))``.

coturn recomputes the password and refuses a username whose expiry is past (401 on Allocate).
It checks the expiry when an allocation is made, not when it is refreshed (measured with coturn
4.6.1: a refresh 440 s after the expiry succeeded), so a running session outlives its
credentials. Pages and ``endolink publish`` ask for fresh ones before every new session
(``OPTIONS`` on the WHIP/WHEP endpoint), and the relay mints its own per peer connection; the
lifetime only has to cover minting → allocating, clock skew between this server and coturn, and
a page that falls back to the list it got at load (``GET /api/session``):
``ENDOLINK_TURN_TTL_S``, 1 h by default. A leaked credential opens no new allocation after that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

from signaling.settings import IceServer, Settings

RELAY_IDENTITY = "relay"
"The identity in the credentials the relay itself uses (its TURN allocations)."


def turn_password(secret: str, username: str) -> str:
    """coturn's password for ``username``: base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class TurnCredentials:
    """Mints short-lived credentials for the configured coturn URLs."""

    def __init__(
        self,
        urls: tuple[str, ...],
        secret: str,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._urls = urls
        self._secret = secret
        self._ttl_s = ttl_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"TurnCredentials(urls={self._urls!r}, ttl_s={self._ttl_s})"

    def mint(self, identity: str) -> tuple[IceServer, ...]:
        """One IceServer per URL, all with the same fresh username and password (coturn reads
        the expiry up to the first ``:``, so the identity may hold more)."""
        username = f"{int(self._clock()) + self._ttl_s}:{identity}"
        password = turn_password(self._secret, username)
        return tuple(IceServer(url, username, password) for url in self._urls)


class IceServers:
    """The STUN/TURN servers each participant (and the relay) connects with: freshly minted
    TURN credentials first — aiortc uses only the first TURN URL it can, so the minted ones win
    over a static TURN — then the static ``ENDOLINK_ICE_SERVERS``."""

    def __init__(self, settings: Settings) -> None:
        self.static = settings.ice_servers
        self.turn = _turn_credentials(settings)
        self.relay_turn = settings.relay_turn

    def for_identity(self, identity: str) -> tuple[IceServer, ...]:
        minted = self.turn.mint(identity) if self.turn is not None else ()
        return minted + self.static

    def for_relay(self) -> tuple[IceServer, ...]:
        """The relay's own servers. A relay with a reachable address needs no allocation of its
        own (relayed clients reach its host candidates through coturn), and skipping it keeps
        every answer free of aioice's 5 s wait when coturn is unreachable."""
        return self.for_identity(RELAY_IDENTITY) if self.relay_turn else self.static


def _turn_credentials(settings: Settings) -> TurnCredentials | None:
    if not settings.turn_urls:
        return None
    if not settings.turn_secret:
        raise ValueError(
            "ENDOLINK_TURN_URLS needs ENDOLINK_TURN_SECRET (coturn's static-auth-secret)"
        )
    if settings.turn_ttl_s < 60:
        raise ValueError("ENDOLINK_TURN_TTL_S must be at least 60 seconds")
    return TurnCredentials(settings.turn_urls, settings.turn_secret, settings.turn_ttl_s)
