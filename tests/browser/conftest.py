"""Fixtures of the browser tests: one headless Chromium per module, the real demo-mode site,
and pages opened per device and watched by an Audit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright import sync_api  # a test dependency: missing, it fails the run rather than skipping

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    AXE,
    CHROMIUM,
    DESKTOP,
    Audit,
    LiveSite,
    launch_chromium,
)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GATE_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing browser is a failure, never a silent skip
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The real site (not in demo mode), with an admin account for the inbox and the console."""
    with LiveSite(tmp_path_factory.mktemp("site")) as live:
        live.gate("readers", "add", ADMIN_EMAIL, "--password", ADMIN_PASSWORD, "--admin")
        yield live


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory):
    """A second real site in demo mode (GATE_DEMO=1): persona bar, explain drawer, try-it buttons."""
    live = LiveSite(tmp_path_factory.mktemp("flows-demo"))
    live.env["GATE_DEMO"] = "1"
    with live:
        live.gate("readers", "add", ADMIN_EMAIL, "--password", ADMIN_PASSWORD, "--admin")
        yield live


@pytest.fixture
def device(request) -> dict:
    """The viewport options of the parametrized device (desktop unless parametrized)."""
    return getattr(request, "param", DESKTOP)


@pytest.fixture
def audit(device) -> Audit:
    """What the test's pages showed in the developer tools, and what axe-core found."""
    if not AXE.exists():
        message = f"axe-core is not installed at {AXE} (`make test` installs it from npm)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing checker is a failure, never a silent skip
        pytest.skip(message)
    return Audit("phone" if device.get("is_mobile") else "desktop")


@pytest.fixture
def open_page(browser, device, audit):
    """Open a page in a new browser context (a new visitor) on ``base_url``, watched by ``audit``."""
    contexts = []

    def opener(base_url: str):
        context = browser.new_context(base_url=base_url, **device)
        context.set_default_timeout(10_000)
        audit.watch(context)
        contexts.append(context)
        return context.new_page()

    yield opener
    for context in contexts:
        context.close()
