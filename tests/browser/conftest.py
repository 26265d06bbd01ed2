"""Headless Chromium against the real stack: uvicorn (HTTP + websockets), a Celery
worker on the Redis broker, PostgreSQL and the emulator (all from tests/conftest.py).

Run ``manage.py collectstatic`` first: the ASGI app serves /static/ from STATIC_ROOT.

Playwright's sync API marks its asyncio loop as running on the test thread while it is
started, and Django refuses ORM calls from a thread with a running loop. Rather than set
DJANGO_ALLOW_ASYNC_UNSAFE for the whole process (which would also hide async-safety bugs
in the app under test, running in this same process), one Chromium serves the package
but its loop counts as running only while a test holds ``page``, after every database
fixture has run; tests read the database through ``read_db`` (a short-lived helper
thread). Each test gets a browser context of its own: cookies, storage, permissions,
routes and listeners start empty.

The Celery worker also lives for the package (``shared_worker``); each test's
``celery_worker`` starts on an empty queue and ends once the worker has nothing left of
the test's to run, before the test's tables are emptied.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from tests.conftest import purge_task_queue, start_test_workers

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


class Chromium:
    """Playwright's driver and one Chromium, started once and idle between tests.

    The sync API marks its event loop as running on this thread from the moment it
    starts; between tests the mark is taken off (``in_use`` puts it back), so the next
    test's fixtures can use the ORM. Nothing runs the loop meanwhile: the driver's
    messages wait in its pipe until the next call."""

    def __init__(self) -> None:
        self._playwright = playwright_api.sync_playwright().start()
        self._loop = asyncio.get_running_loop()
        try:
            self._browser = self._launch()
        except BaseException:
            self._playwright.stop()
            raise
        asyncio._set_running_loop(None)

    def _launch(self) -> Any:
        return self._playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[Any]:
        """The browser, with the loop marked running on this thread for as long as it is
        used; no context outlives the block (a failed test may leave a second one)."""
        asyncio._set_running_loop(self._loop)
        try:
            if not self._browser.is_connected():  # a crash in one test ends only that test
                self._browser = self._launch()
            yield self._browser
        finally:
            try:
                for context in self._browser.contexts:
                    context.close()
            finally:
                asyncio._set_running_loop(None)

    def stop(self) -> None:
        asyncio._set_running_loop(self._loop)
        try:
            self._browser.close()
        finally:
            self._playwright.stop()  # ends the loop, which takes its mark off


@pytest.fixture(scope="package")
def chromium() -> Iterator[Chromium]:
    require_chromium()
    chromium = Chromium()
    yield chromium
    chromium.stop()


@pytest.fixture
def page(chromium: Chromium, live_server_url: str, o3_mini: Any, emulator: Any,
         watch: Watch) -> Iterator[Any]:
    """A fresh page in a fresh browser context; every database fixture is set up first."""
    with chromium.in_use() as browser:
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
        yield page


class SharedWorker:
    """The answers worker and the side pool of tests/conftest.py's ``celery_worker``,
    started by the first test that needs them and kept for the next ones.

    Nothing of a test stays in them: tasks read settings, the emulator's address and
    the database when they run, and database connections are closed or returned
    around each task. What a stop would settle, ``settle`` does: the queue is emptied
    and every task the worker has taken is run to its end."""

    def __init__(self) -> None:
        self._workers: tuple[Any, Any] | None = None

    def start(self) -> Any:
        if self._workers is None:
            self._workers = start_test_workers()
        else:
            purge_task_queue()  # nothing left over from a test that ran without it
        return self._workers[0]

    def settle(self, timeout: float = 30.0) -> None:
        from celery.worker import state

        purge_task_queue()
        deadline = time.monotonic() + timeout
        while state.reserved_requests or state.active_requests:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker still runs a task after {timeout:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """A cold shutdown: every test settles the worker, so there is nothing to finish,
        and unlike a warm one it bounds the read of the pending BRPOP that closing the
        broker connection does (which can otherwise wait forever)."""
        if self._workers is not None:
            worker, side = self._workers
            self._workers = None
            side.terminate(in_sighandler=False)
            worker.terminate(in_sighandler=False)


@pytest.fixture(scope="package")
def shared_worker(private_task_queue: str) -> Iterator[SharedWorker]:
    shared = SharedWorker()
    yield shared
    shared.stop()


@pytest.fixture
def celery_worker(transactional_db: None, emulator: Any, shared_worker: SharedWorker) -> Iterator[Any]:
    """tests/conftest.py's worker, shared by the package's tests: empty queue at the start,
    and no task still running when the test's tables are emptied."""
    yield shared_worker.start()
    shared_worker.settle()


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
