"""The browser pages: landing, clinic and surgeon pages plus their static ES modules and CSS.

There is no build step: ``web/`` is served as it is. Pages carry no secret: a short link's page
(``/j/<code>``) trades its code for a token from script, and an older link's token travels in the
URL fragment (never sent to the server); either way the token ends up in ``sessionStorage``.
Every page and static file gets security headers; HTML is never cached so a new release (or a
revoked page) is picked up at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from signaling.keys import CLUSTER

PAGES: dict[str, str] = {
    "/": "index.html",
    "/clinic": "clinic.html",
    "/surgeon": "surgeon.html",
    "/replay": "replay.html",
    # A short invite link: the page trades the code for a token (signaling/auth/invites.py).
    "/j/{code}": "join.html",
}

# A Host header we are willing to echo into the CSP (ws:/wss: sources for browsers whose
# ``connect-src 'self'`` does not yet cover WebSockets). Anything else falls back to 'self' only.
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")

PERMISSIONS_POLICY = "camera=(self), microphone=(self)"


def content_security_policy(host: str | None, nodes: Iterable[str] = ()) -> str:
    """``nodes``: in a cluster, the other nodes' public URLs (a page's offers go to the node
    that serves its consultation's media)."""
    connect = ["'self'"]
    if host and _HOST_RE.match(host):
        connect += [f"ws://{host}", f"wss://{host}"]
    connect += nodes
    directives = [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src " + " ".join(connect),
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
    return "; ".join(directives)


def security_headers(request: web.Request, html: bool) -> dict[str, str]:
    headers = {
        "Referrer-Policy": "no-referrer",
        "Permissions-Policy": PERMISSIONS_POLICY,
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Content-Security-Policy": content_security_policy(request.host, _nodes(request)),
    }
    # HTML: never stored. Static modules: may be kept but always revalidated (no build step,
    # no hashed file names, so a stale module must never outlive a release).
    headers["Cache-Control"] = "no-store" if html else "no-cache"
    return headers


def _nodes(request: web.Request) -> tuple[str, ...]:
    cluster = request.app.get(CLUSTER)
    return () if cluster is None else cluster.node_urls


def add_routes(app: web.Application, web_dir: Path) -> None:
    web_dir = web_dir.resolve()

    for route, filename in PAGES.items():
        app.router.add_get(route, _page_handler(web_dir / filename), name=_route_name(filename))

    app.router.add_static("/static/", web_dir, name="static", follow_symlinks=False)
    app.on_response_prepare.append(_static_headers)


def _route_name(filename: str) -> str:
    return "page-" + filename.removesuffix(".html")


def _page_handler(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not path.is_file():
            raise web.HTTPNotFound(reason="page not installed")
        response = web.FileResponse(path, headers=security_headers(request, html=True))
        response.content_type = "text/html"
        response.charset = "utf-8"
        return response

    return handler


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers for ``/static/`` files (the page handlers set their own)."""
    if not request.path.startswith("/static/"):
        return
    for name, value in security_headers(request, html=request.path.endswith(".html")).items():
        response.headers.setdefault(name, value)
