"""The coordinator's "Patient (for the hospital record)" form on the landing page, in the real
browser at desktop and phone sizes: shown only to an administrator token, it reads and records
the details, says in the visitor's language what happened, and fits the screen."""

from __future__ import annotations

from pathlib import Path

import pytest

from signaling.keys import PATIENTS

from .conftest import LiveServer, chromium, playwright_api

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

FITS = """() => {
  const vw = window.innerWidth;
  const form = [...document.querySelectorAll('#patient-form :is(input, select, button)')];
  const outside = form.filter((el) => { const b = el.getBoundingClientRect();
    return b.width === 0 || b.left < -0.5 || b.right > vw + 0.5; })
    .map((el) => el.id || el.dataset.testid);
  return {scrollWidth: document.documentElement.scrollWidth, vw, outside};
}"""


@pytest.mark.parametrize(
    ("size", "locale", "saved"),
    [((1440, 900), "en-GB", "Saved for consultation"), ((390, 844), "ko-KR", "저장했습니다")],
    ids=["desktop-en", "phone-ko"],
)
async def test_the_coordinator_records_the_patients_details_on_the_landing_page(
    live_server: LiveServer, tmp_path: Path, size: tuple[int, int], locale: str, saved: str
) -> None:
    consultation = await live_server.consultation(consent=True)
    device = {"viewport": {"width": size[0], "height": size[1]}, "locale": locale}
    async with chromium(tmp_path, **device) as harness:
        page = await harness.open(live_server.url("", live_server.token("admin", "*")), "index")
        panel = page.get_by_test_id("patient-panel")
        await expect(panel).to_be_visible()
        assert "#token" not in page.url  # the token left the address bar
        await page.get_by_test_id("patient-consultation").fill("no-such-one")
        await page.get_by_test_id("patient-consultation").press("Tab")
        status = page.get_by_test_id("patient-status")
        await expect(status).to_have_attribute("data-level", "error")

        await page.get_by_test_id("patient-consultation").fill(consultation.id)
        await page.get_by_test_id("patient-consultation").press("Tab")
        await expect(status).to_have_attribute("data-level", "info")
        await page.get_by_test_id("patient-save").click()  # no patient ID: said, not sent
        await expect(status).to_have_attribute("data-level", "error")

        await page.get_by_test_id("patient-id").fill("MRN-55")
        await page.get_by_test_id("patient-issuer").fill("Ulaanbaatar Central Hospital")
        await page.get_by_test_id("patient-family-name").fill("Ganbold")
        await page.get_by_test_id("patient-given-names").fill("Saruul")
        await page.get_by_test_id("patient-birth-date").fill("1975-06-01")
        await page.get_by_test_id("patient-sex").select_option("female")
        await page.get_by_test_id("patient-save").click()
        await expect(status).to_contain_text(saved)
        await expect(status).to_have_attribute("data-level", "info")

        record = await live_server.app[PATIENTS].latest(consultation.id)
        assert record is not None
        assert record.patient.to_json() == {
            "patient_id": "MRN-55",
            "issuer": "Ulaanbaatar Central Hospital",
            "family_name": "Ganbold",
            "given_names": "Saruul",
            "birth_date": "1975-06-01",
            "sex": "female",
        }
        layout = await page.evaluate(FITS)
        assert layout["scrollWidth"] <= layout["vw"] and layout["outside"] == [], layout

        await page.reload()  # the token stays for this tab; the details are read back
        await page.get_by_test_id("patient-consultation").fill(consultation.id)
        await page.get_by_test_id("patient-consultation").press("Tab")
        await expect(page.get_by_test_id("patient-family-name")).to_have_value("Ganbold")
        assert not [line for line in harness.console if "Ganbold" in line or "MRN-55" in line]


async def test_the_form_stays_hidden_from_everyone_but_the_coordinator(
    live_server: LiveServer, tmp_path: Path
) -> None:
    consultation = await live_server.consultation(consent=True)
    async with chromium(tmp_path) as harness:
        for role in ("surgeon", "clinic", "observer"):
            url = live_server.url("", live_server.token(role, consultation.id))
            page = await harness.open(url, role)
            await expect(page.get_by_role("heading", level=1)).to_be_visible()
            await page.wait_for_load_state("networkidle")
            await expect(page.get_by_test_id("patient-panel")).to_be_hidden()
            await page.close()
        page = await harness.open(live_server.url(""), "visitor")
        await page.wait_for_load_state("networkidle")
        await expect(page.get_by_test_id("patient-panel")).to_be_hidden()


async def test_a_refused_detail_is_said_in_the_visitors_language(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """The server refuses ``^`` in a name (DICOM PN); a Korean coordinator reads why in Korean,
    from the refusal's code, not the server's English reason."""
    consultation = await live_server.consultation(consent=True)
    async with chromium(tmp_path, locale="ko-KR") as harness:
        token = live_server.token("admin", consultation.id)
        page = await harness.open(live_server.url("", token), "index")
        await expect(page.get_by_test_id("patient-panel")).to_be_visible()
        status = page.get_by_test_id("patient-status")
        await expect(status).to_have_attribute("data-level", "info")
        await page.get_by_test_id("patient-id").fill("MRN-56")
        await page.get_by_test_id("patient-family-name").fill("Kim^Lee")
        await page.get_by_test_id("patient-save").click()
        await expect(status).to_have_attribute("data-level", "error")
        await expect(status).to_contain_text("^, =, \\ 문자를 쓸 수 없습니다")
        assert "must not contain" not in (await status.text_content() or "")
    assert await live_server.app[PATIENTS].latest(consultation.id) is None
