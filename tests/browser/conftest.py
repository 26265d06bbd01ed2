"""Headless Chromium against the real stack: uvicorn (HTTP + websockets), a Celery
worker on the Redis broker, PostgreSQL and the emulator (all from tests/conftest.py).

Run ``manage.py collectstatic`` first: the ASGI app serves /static/ from STATIC_ROOT.

Playwright's sync API keeps an asyncio loop running on the test thread while a browser
is open, and Django refuses ORM calls from a thread with a running loop. Rather than set
DJANGO_ALLOW_ASYNC_UNSAFE for the whole process (which would also hide async-safety bugs
in the app under test, running in this same process), the browser lives only inside each
test, after every database fixture has run, and tests read the database through
``read_db`` (a short-lived helper thread).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from django.db import connections

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
PASSWORD = "a browser-test passphrase 41"

T = TypeVar("T")
_emails = itertools.count(1)


def require_chromium() -> None:
    """Fail, not skip, when Chromium is missing: a fresh machine must not pass the suite
    without its browser tests. ALLOW_NO_BROWSER=1 turns the failure into a skip."""
    if os.path.exists(CHROMIUM):
        return
    message = f"{CHROMIUM} is not installed: install it with `apt-get install -y chromium`"
    if os.environ.get("ALLOW_NO_BROWSER", "").strip().lower() in ("1", "true", "yes"):
        pytest.skip(f"{message} (skipped: ALLOW_NO_BROWSER is set)")
    pytest.fail(f"{message}, or set ALLOW_NO_BROWSER=1 to skip browser tests", pytrace=False)


def read_db(func: Callable[[], T]) -> T:
    """Run ORM code on a helper thread (no event loop there) and close its connection."""

    def run() -> T:
        try:
            return func()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@dataclass
class Watch:
    """What a page did that a chat page must never do on its own."""

    dialogs: list[str] = field(default_factory=list)
    remote_requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def page(live_server_url: str, o3_mini: Any, emulator: Any, watch: Watch) -> Iterator[Any]:
    """A fresh page in a fresh browser context; every database fixture is set up first."""
    require_chromium()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=live_server_url)
        context.set_default_timeout(15_000)

        def on_route(route: Any) -> None:
            # Nothing leaves the machine; anything that tried is remembered.
            if urlsplit(route.request.url).hostname in ("127.0.0.1", None):
                route.continue_()
            else:
                watch.remote_requests.append(route.request.url)
                route.abort()

        context.route("**/*", on_route)
        page = context.new_page()

        def on_dialog(dialog: Any) -> None:
            watch.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_request(request: Any) -> None:
            if urlsplit(request.url).hostname not in ("127.0.0.1", None):
                watch.remote_requests.append(request.url)

        page.on("dialog", on_dialog)
        page.on("request", on_request)
        page.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))
        try:
            yield page
        finally:
            context.close()
            browser.close()


def sign_up(page: Any, *, email: str | None = None, organization: str = "Browser Test Org") -> str:
    """Create an account through the sign-up form; lands on the chat page."""
    email = email or f"person{next(_emails)}-{time.time_ns()}@example.com"
    page.goto("/accounts/signup/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Organization name").fill(organization)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    # The socket is open once the connection status leaves "connecting".
    playwright_api.expect(page.get_by_test_id("connection-status")).to_have_attribute(
        "data-state", "open"
    )
    return email


@pytest.fixture
def chat_page(page: Any) -> Any:
    """A signed-up person on an empty chat page with its websocket open."""
    sign_up(page)
    return page
