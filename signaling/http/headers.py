"""Response headers every answer gets, set in one place (``on_response_prepare``).

* ``X-Content-Type-Options: nosniff`` on everything: a browser never guesses a type.
* ``Cache-Control: no-store`` on every API answer — ``/api/``, ``/whip/``, ``/whep/``, the short
  links ``/j/`` and the WebSocket — and on anything else carrying a token: no proxy, browser
  cache or back button keeps a token, a name or a frame of patient video. A route's stricter
  or equal own value (``private, no-store``) is kept; a caching one is replaced.
* ``Strict-Transport-Security`` when the request came over TLS (``endolink serve --tls``).
* ``Server: EndoLink``: aiohttp would announce ``Python/3.11 aiohttp/<version>``. Its default
  is replaced where aiohttp reads it (``web_response.SERVER_SOFTWARE``), not per response: the
  400s of its HTTP parser never reach the application's signals (aiohttp#3287), and they would
  still carry the version.

The pages' own headers (CSP, frame and referrer policy) are ``pages.security_headers``.
"""

from __future__ import annotations

from aiohttp import hdrs, web, web_response

SERVER = "EndoLink"
HSTS = "max-age=31536000"
"One year; no ``includeSubDomains``: the server does not know what else runs under its name."
NO_STORE_PREFIXES = ("/api/", "/whip/", "/whep/", "/j/", "/ws/")


def add_to(app: web.Application) -> None:
    setattr(web_response, "SERVER_SOFTWARE", SERVER)  # noqa: B010 (see the module doc)
    app.on_response_prepare.append(_on_prepare)


def no_store(request: web.Request) -> bool:
    """Whether the answer must never be stored: an API answer, or a request that carries a
    token (a page fetched with ``Authorization``)."""
    path = request.path
    return path.startswith(NO_STORE_PREFIXES) or hdrs.AUTHORIZATION in request.headers


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    if no_store(request) and "no-store" not in headers.get(hdrs.CACHE_CONTROL, ""):
        headers[hdrs.CACHE_CONTROL] = "no-store"
    if request.secure:
        headers[hdrs.STRICT_TRANSPORT_SECURITY] = HSTS
