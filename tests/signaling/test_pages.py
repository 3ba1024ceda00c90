"""Static pages: routes, content types and security headers (no browser needed)."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient

PAGES = ["/", "/clinic", "/surgeon"]
STATIC = [
    ("/static/css/app.css", "text/css"),
    ("/static/js/session.js", "javascript"),
    ("/static/js/whip.js", "javascript"),
    ("/static/js/room.js", "javascript"),
    ("/static/js/stats.js", "javascript"),
    ("/static/js/media.js", "javascript"),
    ("/static/js/ui.js", "javascript"),
    ("/static/js/clinic.js", "javascript"),
    ("/static/js/surgeon.js", "javascript"),
    ("/static/img/icon.svg", "image/svg+xml"),
]


@pytest.mark.parametrize("path", PAGES)
async def test_pages_are_html_with_security_headers(client: TestClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert response.content_type == "text/html"
    headers = response.headers
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Permissions-Policy"] == "camera=(self), microphone=(self)"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert re.search(r"connect-src 'self' ws://127\.0\.0\.1:\d+ wss://127\.0\.0\.1:\d+", csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


@pytest.mark.parametrize("path", ["/clinic", "/surgeon", "/"])
async def test_pages_have_no_inline_scripts_or_external_assets(
    client: TestClient, path: str
) -> None:
    html = await (await client.get(path)).text()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'type="module"' in tag and 'src="/static/' in tag, tag
    assert not re.search(r"<script\b[^>]*>(?!</script>)", html), "inline script"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert "http://" not in html and "https://" not in html.replace("https://&lt;server&gt;", "")


async def test_page_ignores_query_and_needs_no_token(client: TestClient) -> None:
    response = await client.get("/surgeon?utm=x")
    assert response.status == 200
    assert "remote-video" in await response.text()


@pytest.mark.parametrize(("path", "kind"), STATIC)
async def test_static_files(client: TestClient, path: str, kind: str) -> None:
    response = await client.get(path)
    assert response.status == 200, path
    assert kind in response.content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    "path", ["/static/../signaling/app.py", "/static/%2e%2e/pyproject.toml", "/static/js/nope.js"]
)
async def test_static_does_not_leave_web_dir(client: TestClient, path: str) -> None:
    response = await client.get(path)
    assert response.status in (403, 404)


async def test_csp_skips_unusual_host_header(client: TestClient) -> None:
    response = await client.get("/clinic", headers={"Host": "evil.example; script-src *"})
    csp = response.headers["Content-Security-Policy"]
    assert "evil" not in csp
    assert "connect-src 'self';" in csp


async def test_api_responses_untouched(client: TestClient) -> None:
    response = await client.get("/api/session")
    assert response.status == 401
    assert "Content-Security-Policy" not in response.headers
