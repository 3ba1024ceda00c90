"""The pages' diagnostic "force TURN" (``?relay=1``): Chromium with ``iceTransportPolicy: "relay"``
publishes from the clinic page and plays on the surgeon page through a real coturn, with the
credentials the server mints for each page."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from signaling.auth.grants import Role
from signaling.settings import Settings
from tests.coturn import Coturn, coturn

from .conftest import Browser, LiveServer, playwright_api
from .test_pages import assert_video_plays, record_consent, start_clinic_stream

expect = playwright_api.expect
pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

SELECTED_PAIR = """
async (which) => {
  const pc = window.endolink[which];
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = stats.get(s.selectedCandidatePairId);
    }
  });
  if (!pair) return null;
  return {
    local: stats.get(pair.localCandidateId).candidateType,
    remote: stats.get(pair.remoteCandidateId).candidateType,
    policy: pc.getConfiguration().iceTransportPolicy,
  };
}
"""


@pytest.fixture
async def turn(tmp_path: Path) -> AsyncIterator[Coturn]:
    async with coturn(tmp_path / "coturn") as server:
        yield server


@pytest.fixture
def settings(settings: Settings, turn: Coturn) -> Settings:
    """The app with coturn configured (coturn starts before and stops after the server)."""
    return replace(settings, turn_urls=turn.urls("udp"), turn_secret=turn.secret)


async def selected_pair(page, which: str) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pair = await page.evaluate(SELECTED_PAIR, which)
        if pair:
            return pair  # type: ignore[no-any-return]
        await page.wait_for_timeout(100)
    raise AssertionError(f"{which}: no selected candidate pair within 10 s")


async def test_forced_turn_clinic_and_surgeon_pages_stream_through_coturn(
    live_server: LiveServer, browser: Browser, turn: Coturn
) -> None:
    consultation = await live_server.consultation(consent=False)
    clinic_url = live_server.url("clinic?relay=1", live_server.token(Role.CLINIC, consultation.id))
    surgeon_url = live_server.url(
        "surgeon?relay=1", live_server.token(Role.SURGEON, consultation.id)
    )
    clinic = await browser.open(clinic_url, "clinic")
    surgeon = await browser.open(surgeon_url, "surgeon", window=True)
    for page in (clinic, surgeon):
        notice = page.locator('#notices [data-key="relay"]')
        await expect(notice).to_contain_text("Network test mode")
    await record_consent(clinic)
    clicked = await start_clinic_stream(clinic)
    metrics = await assert_video_plays(surgeon, "surgeon through TURN", clicked)
    assert metrics["frames"] > 10
    for page, which in ((clinic, "publishPc"), (surgeon, "playerPc")):
        pair = await selected_pair(page, which)
        assert pair["policy"] == "relay" and pair["local"] == "relay", pair
    log = turn.log_text()
    assert ":clinic-" in log and ":surgeon-" in log
