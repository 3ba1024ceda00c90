"""Media tokens: short-lived, recording-scoped capabilities for ``<video src>``.

A ``<video>`` element cannot send an ``Authorization`` header, and the browser's Range requests
(every seek) must reach the server straight from the media element for seeking to work. So the
replay page asks ``GET /api/recordings/{id}/media-token`` (Bearer, checked like any replay) and
puts the answer in the media URL as ``?t=``. The token:

* is signed with a key *derived* from the server secret (HMAC-SHA256 of it with a fixed label),
  and carries ``aud: endolink-media``: it is never accepted as a Bearer token, and a Bearer token
  is never accepted as a media token;
* names one recording (``rid``) and is refused on any other recording's media;
* lives ``MEDIA_TOKEN_TTL_S`` (5 minutes) at most: a copied URL soon stops working;
* is refused once its consultation's access (or its identity's link) is withdrawn after it was
  made, like the Bearer token it came from (``signaling/replay/access.py`` asks the revocations,
  for the recording's consultation);
* is accepted as ``?t=`` on the media routes only (``GET /api/recordings/{id}/media/{segment}``
  and its ``/talkback``), and the access log redacts it (``signaling/http/logs.py``) — the
  error middleware logs paths without queries.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

from signaling.auth.grants import Grant, Role, TokenInvalid

MEDIA_TOKEN_TTL_S = 300
AUDIENCE = "endolink-media"
ISSUER = "endolink"
_KEY_LABEL = b"endolink media token v1"
_ALGORITHM = "HS256"
MEDIA_QUERY = "t"


@dataclass(frozen=True)
class MediaGrant:
    """Who may fetch which recording's media, until when."""

    recording_id: str
    identity: str
    role: Role
    expires_at: int
    issued_at: float


class MediaTokens:
    def __init__(self, secret: str, ttl_s: int = MEDIA_TOKEN_TTL_S) -> None:
        self._key = hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).hexdigest()
        self.ttl_s = min(ttl_s, MEDIA_TOKEN_TTL_S)

    def issue(self, grant: Grant, recording_id: str) -> tuple[str, int]:
        """(token, expiry as Unix seconds): never past the Bearer token's own expiry."""
        # ``iat`` sub-second, as for Bearer tokens: compared with a withdrawal's time.
        now = time.time()
        expires = min(int(now) + self.ttl_s, grant.expires_at)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": grant.identity,
            "role": str(grant.role),
            "rid": recording_id,
            "iat": now,
            "exp": expires,
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM), expires

    def verify(self, token: str) -> MediaGrant:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "rid", "role"]},
            )
            return MediaGrant(
                str(claims["rid"]),
                str(claims["sub"]),
                Role(claims["role"]),
                int(claims["exp"]),
                float(claims["iat"]),
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenInvalid("media token expired: ask for a new one") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise TokenInvalid("media token rejected") from exc
