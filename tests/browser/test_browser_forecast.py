"""The console's forecast in a real browser: Start shows a progress bar, then the table and the daily
funnel replace it without a reload; a refused value is shown beside its field; axe and a phone's width."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, DEVICES, LiveSite, log_in

pytestmark = pytest.mark.browser

#: Long enough for the bar to be seen, short enough for a loaded machine: about 2,000 visits a preset.
READERS, DAYS = "3000", "30"


#: Records every text the status shows, whether the progress bar was ever shown and the button held.
_WATCH_THE_STATUS = """() => {
  const box = document.querySelector('[data-forecast]');
  const status = box.querySelector('[data-forecast-status]');
  const bar = box.querySelector('[data-forecast-progress]');
  const button = box.querySelector('[data-forecast-start]');
  window.forecastSeen = {statuses: [], bar: false, busy: false};
  new MutationObserver(() => {
    const seen = window.forecastSeen;
    if (seen.statuses[seen.statuses.length - 1] !== status.textContent) seen.statuses.push(status.textContent);
    seen.bar = seen.bar || !bar.hidden;
    seen.busy = seen.busy || button.disabled;
  }).observe(box, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


@pytest.fixture(scope="module")
def forecast_site(tmp_path_factory):
    """The real site with an admin, keeping its forecasts in an instance folder of its own."""
    directory = tmp_path_factory.mktemp("forecast")
    with LiveSite(directory, GATE_INSTANCE=str(directory / "instance")) as live:
        live.gate("readers", "add", ADMIN_EMAIL, "--password", ADMIN_PASSWORD, "--admin")
        yield live


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_a_forecast_shows_its_progress_then_its_table_and_charts(forecast_site, open_page, audit, device):
    page = open_page(forecast_site.url)
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto("/admin/forecast?preset=wpr")
    expect(page.get_by_role("heading", level=1)).to_have_text("Forecast")
    box = page.get_by_role("region", name="Forecast")
    expect(box.get_by_label("Preset to forecast")).to_have_value("wpr")
    audit.axe(page, "forecast form")

    box.get_by_label("Against").select_option("wpr")  # the same preset twice: refused, nothing started
    box.get_by_role("button", name="Start the forecast").click()
    expect(page.locator("#forecast-preset-error")).to_contain_text("choose another one")
    expect(box.get_by_label("Preset to forecast")).to_have_attribute("aria-invalid", "true")
    expect(box.get_by_role("status")).to_contain_text("Nothing was started")
    expected = [line for line in audit.errors if "status of 400" in line]
    assert len(expected) == 1  # the refusal answers 400 on purpose (the browser logs it): nothing else
    audit.errors.remove(expected[0])

    box.get_by_label("Against").select_option("metered")
    box.get_by_label("Readers").fill(READERS)
    box.get_by_label("Days").fill(DAYS)
    box.get_by_label("Seed").fill("1" if device.get("is_mobile") else "2")  # each device starts its own
    # A fast machine may finish between two polls: what the status and the bar went through is recorded.
    page.evaluate(_WATCH_THE_STATUS)
    box.get_by_role("button", name="Start the forecast").click()
    progress = box.locator("progress")
    expect(page.locator("#forecast-preset-error")).to_have_count(0)

    table = box.get_by_role("table", name="What wpr would bring, against metered")
    expect(table).to_be_visible(timeout=120_000)
    expect(table.get_by_role("row", name="subscriptions")).to_be_visible()
    expect(box.locator(".forecast__charts svg")).to_have_count(4)
    expect(box.get_by_role("img", name="Registrations a day: metered and wpr")).to_be_visible()
    expect(progress).to_be_hidden()
    expect(box.get_by_role("status")).to_contain_text("Done: wpr against metered")
    seen = page.evaluate("window.forecastSeen")
    assert seen["bar"] and seen["busy"], seen  # the bar was shown and the button held while it ran
    assert any(text.startswith(("Starting the forecast", "Waiting to start", "Simulating 3,000 readers over 30 days"))
               for text in seen["statuses"]), seen
    expect(box.get_by_role("button", name="Start the forecast")).to_be_enabled()
    assert "job=" in page.url
    audit.axe(page, "forecast result")
    if os.environ.get("GATE_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["GATE_SCREENSHOTS"], f"console-forecast-{audit.device}.png"),
                        full_page=True)

    page.reload()  # the address names the forecast: the page shows it again, from the server
    expect(page.get_by_role("table", name="What wpr would bring, against metered")).to_be_visible()
    audit.axe(page, "forecast reloaded")
    audit.assert_clean()
