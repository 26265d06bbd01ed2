"""The owner's journey through a guessing attack, in Chromium: her own browser still signs
in, a new device is paused with a way out, and a reset through the emailed link lets her
in from anywhere at once.

The attackers post wrong passwords from other addresses on the server side (the browser's
address is 127.0.0.1 for every context); the reset link comes from the mail outbox, which
stands in for alice's inbox.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client

from tests.browser.conftest import Watch, read_db
from tests.browser.test_budgets import open_context, watch_page

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

RIGHT = "correct horse battery staple"  # tests/conftest.make_user's password
NEW_PASSWORD = "a new pass phrase after the attack 12"


def _sign_in(page: Any, password: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill("alice@example.com")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def _guess_from_many_clients(count: int) -> list[int]:
    def guess() -> list[int]:
        return [Client(REMOTE_ADDR=f"198.51.100.{n + 1}").post(
            "/accounts/login/", {"username": "alice@example.com", "password": f"guess {n}"}
        ).status_code for n in range(count)]

    return read_db(guess)


def test_alice_signs_in_through_an_attack_and_a_reset_lets_her_in_anywhere(
    alice: Any, page: Any, watch: Watch, live_server_url: str, settings: Any
) -> None:
    # Her own browser has signed in before.
    _sign_in(page, RIGHT)
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(lambda url: urlsplit(url).path != "/")

    statuses = _guess_from_many_clients(settings.LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS)
    assert statuses == [200] * (settings.LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS - 1) + [429]

    # A new device is paused and told what it can do.
    context = open_context(page.context.browser, live_server_url, watch)
    laptop = context.new_page()
    watch_page(laptop, watch)
    try:
        _sign_in(laptop, RIGHT)
        expect(laptop.get_by_role("heading", name="Sign-in paused")).to_be_visible()
        alert = laptop.get_by_role("alert")
        expect(alert).to_contain_text("devices that have not signed in to it before")
        expect(alert).to_contain_text("Try again in 15 minutes")

        # Her own browser still signs in.
        _sign_in(page, RIGHT)
        page.wait_for_url(lambda url: urlsplit(url).path == "/")

        laptop.get_by_role("link", name="Forgot password?").click()
        laptop.get_by_label("Email").fill("alice@example.com")
        laptop.get_by_role("button", name="Send reset link").click()
        expect(laptop.get_by_role("heading", name="Check your email")).to_be_visible()
        # The path only: the emailed link's host is SITE_URL, not this test server.
        link = re.search(r"/accounts/password/reset/[^/\s]+/[^/\s]+/", str(mail.outbox[-1].body))
        assert link is not None and mail.outbox[-1].to == ["alice@example.com"]
        laptop.goto(link[0])
        laptop.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        laptop.get_by_label("Repeat new password").fill(NEW_PASSWORD)
        laptop.get_by_role("button", name="Set new password").click()
        expect(laptop.get_by_role("heading", name="Password changed")).to_be_visible()

        # The new device, never signed in before, now signs in at once.
        laptop.get_by_role("link", name="Sign in").click()
        laptop.get_by_label("Email").fill("alice@example.com")
        laptop.get_by_label("Password").fill(NEW_PASSWORD)
        laptop.get_by_role("button", name="Sign in").click()
        laptop.wait_for_url(lambda url: urlsplit(url).path == "/")
    finally:
        context.close()
    assert watch.page_errors == [] and watch.remote_requests == []
