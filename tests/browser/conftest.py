"""Browser tests: Playwright for Python driving Debian's Chromium
(``/usr/bin/chromium``; Playwright's own browser download is never used).

One browser per module; a fresh context (cookies, storage) per test. On a
failure the page's screenshot and HTML are saved under ``var/browser/``.
They skip only when Chromium is missing outside CI; in CI (``CI=true``) a
missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; Django's ORM calls
# the tests make for set-up are synchronous and safe here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "browser"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

from tests.providers.conftest import (  # noqa: E402, F401
    cursor_sim,
    devin_sim,
    github_sim,
    sim_for,
    simulator_servers,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    # A shared CI machine can be slow: assertions wait up to 10 s, not 5.
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, request):
    """``new_page(**context_options)``: a page in a fresh context; pages are
    saved (screenshot + HTML) when the test fails."""
    pages = []
    contexts = []

    def make(**options):
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        pages.append(page)
        return page

    yield make
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for n, page in enumerate(pages):
            stem = ARTIFACTS / f"{request.node.name}-{n}"
            try:
                page.screenshot(path=f"{stem}.png", full_page=True)
                Path(f"{stem}.html").write_text(page.content(), encoding="utf-8")
            except Exception as exc:  # a closed page: keep the other artifacts
                Path(f"{stem}.txt").write_text(f"no capture: {exc}", encoding="utf-8")
    for context in contexts:
        context.close()
