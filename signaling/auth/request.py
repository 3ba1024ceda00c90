"""Request authentication: ``Authorization: Bearer <JWT>`` → ``Grant``.

Tokens are accepted from the header only. A token in the query string would end up in access
logs, proxy logs and browser history, so such requests are refused with a reason saying why.
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web

from relay import ConsultationId
from signaling.auth.grants import Grant, TokenInvalid, TokenMissing
from signaling.keys import GRANT, TOKENS

logger = logging.getLogger(__name__)

_QUERY_TOKEN_NAMES = ("token", "access_token", "jwt")


def bearer_token(request: web.Request) -> str:
    """The raw token of the request; raises ``TokenInvalid`` (HTTP 401) if there is none."""
    header = request.headers.get(hdrs.AUTHORIZATION, "").strip()
    if not header:
        if any(name in request.query for name in _QUERY_TOKEN_NAMES):
            raise TokenInvalid(
                "tokens in the URL are refused (they leak into logs): "
                "send an Authorization: Bearer header"
            )
        raise TokenMissing("missing bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise TokenInvalid("authorization scheme must be Bearer")
    token = token.strip()
    if not token:
        raise TokenInvalid("missing bearer token")
    return token


def authenticate(request: web.Request) -> Grant:
    """Verify the request's token and remember its Grant on the request for later handlers."""
    grant = request.app[TOKENS].verify(bearer_token(request))
    request[GRANT] = grant
    return grant


def path_cid(request: web.Request) -> ConsultationId:
    """The ``{cid}`` of the request's path; its shape is checked where it is looked up."""
    return ConsultationId(request.match_info["cid"])
