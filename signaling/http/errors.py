"""One error shape for the whole HTTP edge: ``{"error": code, "reason": sentence}``.

Handlers raise ``ApiError`` (or let ``TokenInvalid`` / ``Forbidden`` / relay errors / the recording
library's ``Unavailable`` escape); the middleware turns them into the right status, logs them
without tokens or patient data, and keeps every other consultation running.

Anything else is a bug, and stays one: it is answered ``500 {"error": "internal-error"}`` (the
same shape, a generic reason) and logged as ONE ``ERROR`` line naming the exception type and
where it was raised, never the message or a traceback (their values may hold a token, a name or
a header). The property-based runs (tests/signaling/test_http_fuzz.py) fail on any 5xx, so this
catches nothing silently; it only keeps patient data out of the log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from recorder.library import Unavailable
from relay.errors import RelayError
from signaling.auth.grants import Forbidden, TokenInvalid, TokenMissing
from signaling.http.logs import loggable, raised_at

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error with its HTTP status and a machine-readable code."""

    def __init__(self, status: int, code: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.headers = headers or {}


def json_error(
    status: int, code: str, reason: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "reason": reason}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _logged(request, json_error(exc.status, exc.code, exc.reason, exc.headers))
    except TokenInvalid as exc:
        # RFC 6750 quoted-string: PyJWT's messages may hold quotes ('the "exp" claim').
        description = str(exc).replace("\\", "").replace('"', "'")
        challenge = (
            "Bearer"
            if isinstance(exc, TokenMissing)
            else f'Bearer error="invalid_token", error_description="{description}"'
        )
        headers = {"WWW-Authenticate": challenge}
        return _logged(request, json_error(401, exc.code, str(exc), headers))
    except Forbidden as exc:
        return _logged(request, json_error(403, "forbidden", str(exc)))
    except RelayError as exc:
        return _logged(request, json_error(exc.status, exc.code, str(exc), exc.headers))
    except Unavailable as exc:
        return _logged(request, json_error(404, "not-found", str(exc)))
    except web.HTTPRequestEntityTooLarge:
        return _logged(request, json_error(413, "too-large", "request body too large"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return _logged(request, json_error(exc.status, _code_for(exc.status), exc.reason, headers))
    except Exception as exc:  # a bug: see the module doc
        logger.error(
            "%s %s -> 500 %s at %s",
            request.method,
            loggable(request.path),
            type(exc).__name__,
            raised_at(exc),
        )
        if request.writer.output_size > 0 and request.transport is not None:
            # The answer had begun (a stream, a download): a second one would corrupt it. The
            # connection is cut, so the client sees a failure, not a short answer.
            request.transport.abort()
            raise ConnectionResetError("answer already started") from None
        return json_error(500, "internal-error", "the server failed to answer this request")


def _code_for(status: int) -> str:
    return {404: "not-found", 405: "method-not-allowed"}.get(status, "http-error")


def _logged(request: web.Request, response: web.Response) -> web.Response:
    # request.path is decoded: a %0a in it would start a forged log line (see logs.loggable).
    path = loggable(request.path)
    logger.info(
        "%s %s -> %d %s", request.method, path, response.status, loggable(response.text or "")
    )
    return response
