"""The demo's page in a real headless Chromium, in every mode, under gunicorn.

Driven by Playwright for Python with Debian's ``chromium`` (``/usr/bin/chromium``,
or ``CHROMIUM``); Playwright's own browser downloads are never used. The page
must load without console errors, show a dog picture and its name, follow an
order through ``/track`` until it is delivered and show the worker's figures.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect, sync_playwright

from demo_flask import ALL_MODES
from demo_flask.catalog import DOGS
from demo_flask.page import ROUTE_STEPS
from demo_flask.services import AppServer, UpstreamServer

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 30_000
_NUMBER = re.compile(r"^\d+$")
_DURATION = re.compile(r"^\d+(\.\d)? (µs|ms)$")
FORBIDDEN_IN_LOG = ("Unclosed", "Task was destroyed", "never awaited", "Traceback")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM)")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            timeout=WAIT_MS,
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(params=ALL_MODES)
def demo(
    request: pytest.FixtureRequest, redis_url: str, upstream: UpstreamServer
) -> Iterator[AppServer]:
    mode = str(request.param)
    with AppServer(mode, redis_url=redis_url, upstream_url=upstream.url, workers=1,
                   threads=8, dev_mode=True) as server:  # fmt: skip
        yield server
        log = server.output()
    for forbidden in FORBIDDEN_IN_LOG:
        assert forbidden not in log, log


def test_page_shows_a_dog_follows_an_order_to_delivered_and_shows_figures(
    browser: BrowserContext, demo: AppServer, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = browser.new_page()
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        response = page.goto(f"{demo.url}/", wait_until="load", timeout=WAIT_MS)
        assert response is not None and response.status == 200
        expect(page.locator("#mode")).to_have_text(demo.mode, timeout=WAIT_MS)

        page.wait_for_function(
            "() => document.getElementById('dog-image').naturalWidth > 0", timeout=WAIT_MS
        )
        any_dog = re.compile("^(" + "|".join(map(re.escape, DOGS.values())) + ")$")
        expect(page.locator("#dog-name")).to_have_text(any_dog, timeout=WAIT_MS)

        page.click("#place-order")
        page.wait_for_function(
            "() => document.getElementById('order-status').dataset.status === 'delivered'",
            timeout=WAIT_MS,
        )
        positions = page.locator("#positions li")
        expect(positions).to_have_count(ROUTE_STEPS)
        assert positions.first.text_content().startswith("picked_up")
        assert positions.last.text_content().startswith("delivered")
        expect(page.locator("#place-order")).to_be_enabled()

        in_flight = page.locator("#in-flight")
        if demo.mode in ("bridge", "bridge-loop"):
            expect(in_flight).to_have_text(_NUMBER, timeout=WAIT_MS)
            expect(page.locator("#lag-p99")).to_have_text(_DURATION, timeout=WAIT_MS)
        else:
            expect(in_flight).to_have_text("n/a", timeout=WAIT_MS)
        expect(page.locator("#billed")).to_have_text(_NUMBER, timeout=WAIT_MS)
        page.screenshot(path=str(tmp_path / f"demo-{demo.mode}.png"), full_page=True)
    finally:
        page.close()
    assert problems == []


