"""Real-browser fixtures: the whole app on a real TCP port and Debian chromium driven by Playwright.

Pages are served from http://127.0.0.1:<port>, a secure context, so camera, microphone and WebRTC
work without TLS. Chromium uses its fake camera/microphone and accepts the permission prompts.
No browser is downloaded: scripts/test installs Debian's chromium; without it these tests fail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from signaling.app import create_app
from signaling.auth.grants import Grant, Role, new_identity
from signaling.auth.invites import Invite, issue_invite
from signaling.db.store import Consultation
from signaling.keys import INVITES, STORE, TOKENS
from signaling.settings import Settings

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="the playwright package is not installed"
)
# Like the pages' default timeout (10 s): a passing check returns as soon as it holds, and a
# state that needs a media connection or a keyframe may take longer than 5 s on a loaded box.
playwright_api.expect.set_options(timeout=10_000)

RECORD_NOTICE = """(key) => {
  const seen = (window.noticeTexts ??= {})[key] = [];
  const host = document.querySelector('[data-testid="notices"]');
  const note = () => {
    const text = host.querySelector(`[data-key="${key}"]`)?.textContent?.trim();
    if (text && seen.at(-1) !== text) seen.push(text);
  };
  new MutationObserver(note).observe(host, { childList: true, subtree: true, characterData: true });
}"""


async def record_notice(page, key: str) -> None:  # type: ignore[no-untyped-def]
    """From now on the page keeps every text its notice ``key`` shows, however briefly (a
    MutationObserver), in ``noticeTexts[key]``: a notice that a quick reconnection clears can
    be missed by polling."""
    await page.evaluate(RECORD_NOTICE, key)


async def notice_shown(page, key: str, text: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Waits until the notice ``key`` has shown ``text`` since ``record_notice``."""
    await page.wait_for_function(
        "([key, text]) => window.noticeTexts[key].includes(text)", arg=[key, text], timeout=timeout
    )


@dataclass
class LiveServer:
    """The app on 127.0.0.1:<port>, with helpers to make consultations and invite tokens."""

    base_url: str
    app: web.Application

    def token(self, role: Role | str, consultation: str, ttl_s: int = 600, **overrides) -> str:
        """A link's token; named after its role (``Surgeon``), as ``consult create --…-name``
        makes them, unless ``name=""`` (the page then asks for one)."""
        role = Role(role)
        grant = Grant.for_role(role, consultation, new_identity(role), ttl_s, name=_named(role))
        if overrides:
            grant = Grant(**{**grant.__dict__, **overrides})
        return self.app[TOKENS].issue(grant)

    async def consultation(self, *, consent: bool, title: str = "Browser test") -> Consultation:
        if consent:
            return await self.app[STORE].create(
                title=title, video_codec="VP8", consent_by="Dr. Paper", recorded_by="admin-test"
            )
        return await self.app[STORE].create(title=title, video_codec="VP8", consent_by=None)

    async def short_link(
        self,
        role: Role | str,
        consultation: str,
        ttl_s: int = 600,
        page: str | None = None,
        name: str | None = None,
    ) -> Invite:
        """A ``/j/<code>`` invite, as ``consult create`` prints them (named as in ``token``)."""
        book = self.app[INVITES]
        role = Role(role)
        name = _named(role) if name is None else name
        return await issue_invite(book, self.base_url, consultation, role, ttl_s, page, name)

    def url(self, page: str, token: str | None = None) -> str:
        return f"{self.base_url}/{page}" + (f"#token={token}" if token else "")


def _named(role: Role) -> str:
    """The test participants' names: their role's label, so what pages show stays as before."""
    return str(role).capitalize()


@pytest.fixture
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield LiveServer(base_url=f"http://{host}:{port}", app=app)
    finally:
        await runner.cleanup()


@dataclass
class Browser:
    """One chromium (fresh profile) and the console/page errors of every page it opened."""

    context: object
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    async def open(self, url: str, name: str, window: bool = False):
        """A new tab; with ``window``, a new browser window instead. Tabs behind the front one
        in a window draw at ~1-30 frames/s (requestAnimationFrame throttled even with the
        flags above); pages in their own windows all draw at the display rate, like two
        screens."""
        page = await (self._new_window() if window else self.context.new_page())
        page.on("console", lambda msg: self.console.append(f"[{name}] {msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.page_errors.append(f"[{name}] {exc}"))
        page.on("response", lambda r: self._log_failed(name, r))
        await page.goto(url)
        return page

    async def _new_window(self):
        opened = asyncio.get_running_loop().create_future()
        self.context.once("page", lambda page: opened.done() or opened.set_result(page))
        anchor = self.context.pages[0] if self.context.pages else await self.context.new_page()
        cdp = await self.context.new_cdp_session(anchor)
        try:
            await cdp.send("Target.createTarget", {"url": "about:blank", "newWindow": True})
        finally:
            await cdp.detach()
        return await asyncio.wait_for(opened, 10)

    def _log_failed(self, name: str, response) -> None:
        if response.status >= 400:
            path = response.url.split("#")[0]
            self.console.append(f"[{name}] HTTP {response.status} {response.request.method} {path}")


@pytest.fixture
async def browser(live_server: LiveServer, tmp_path: Path) -> AsyncIterator[Browser]:
    """Depends on live_server so it is closed first (pages end their sessions while the server
    still runs)."""
    async with chromium(tmp_path) as harness:
        yield harness


@contextlib.asynccontextmanager
async def chromium(
    tmp_path: Path, args: Sequence[str] = (), **device: object
) -> AsyncIterator[Browser]:
    """Debian's chromium with a fresh profile in ``tmp_path``; fails the test on page errors.
    ``args``: more command-line switches (``--use-file-for-fake-video-capture=…``);
    ``device``: context options such as ``viewport``, ``has_touch``, ``is_mobile`` (a phone)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: ./scripts/test installs Debian's chromium package")
    async with playwright_api.async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, *args],
            **{"viewport": {"width": 1280, "height": 800}, **device},
        )
        context.set_default_timeout(10_000)
        harness = Browser(context)
        try:
            yield harness
        finally:
            await context.close()
            # Shown by pytest only when the test failed (captured output).
            print("\n--- browser console ---\n" + "\n".join(harness.console))
    if harness.page_errors:
        pytest.fail("uncaught errors in the pages:\n" + "\n".join(harness.page_errors))
