"""Open chat tabs follow the account, in headless Chromium against the real stack: a tab
whose session signs out goes to the sign-in page, and a member an admin removes sees their
tab reload into the access they still have."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import PASSWORD, read_db, sign_up

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every websocket the tab creates and every close code it sees, kept in sessionStorage so
# the record survives the tab's own navigations (to the sign-in page, or a reload).
RECORD_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  const log = (entry) => {
    const entries = JSON.parse(sessionStorage.getItem("socketLog") || "[]");
    entries.push(entry);
    sessionStorage.setItem("socketLog", JSON.stringify(entries));
  };
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      log("new");
      this.addEventListener("close", (event) => log(event.code));
    }
  };
})();
"""


def socket_log(tab: Any) -> list[Any]:
    return json.loads(tab.evaluate("() => sessionStorage.getItem('socketLog') || '[]'"))


def path_is(path: str) -> Any:
    return lambda url: urlsplit(url).path == path


@contextmanager
def another_browser(page: Any, base_url: str, *, cookies_from: Any = None) -> Iterator[Any]:
    """A second browser context (its own cookies unless ``cookies_from`` shares a session)
    whose tabs record their sockets."""
    context = page.context.browser.new_context(base_url=base_url)
    context.set_default_timeout(15_000)
    context.add_init_script(RECORD_SOCKETS)
    if cookies_from is not None:
        context.add_cookies(cookies_from.cookies())
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(tab: Any, email: str) -> None:
    tab.goto("/accounts/login/")
    tab.get_by_label("Email").fill(email)
    tab.get_by_label("Password").fill(PASSWORD)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(path_is("/"))


def expect_socket_open(tab: Any) -> None:
    expect(tab.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")


def test_signing_out_in_one_tab_closes_the_other_tab_and_sends_it_to_sign_in(
    page: Any, live_server_url: str
) -> None:
    email = sign_up(page)
    with another_browser(page, live_server_url, cookies_from=page.context) as second_tab, \
            another_browser(page, live_server_url) as other_browser:
        second_tab.goto("/")
        expect_socket_open(second_tab)
        sign_in(other_browser, email)  # the same person, signed in on another computer
        expect_socket_open(other_browser)

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(path_is("/accounts/login/"))

        second_tab.wait_for_url(path_is("/accounts/login/"))
        expect(second_tab.get_by_label("Email")).to_be_visible()
        # One socket, closed with 4401, and no reconnect attempt after it.
        assert socket_log(second_tab) == ["new", 4401]
        expect_socket_open(other_browser)
        assert socket_log(other_browser) == ["new"]


def test_a_member_an_admin_removes_sees_their_socket_close_with_4403_and_the_tab_reload(
    page: Any, live_server_url: str
) -> None:
    admin_email = sign_up(page, organization="Browser Test Org")
    member_email = f"member-{time.time_ns()}@example.com"

    def add_member() -> int:
        from accounts.models import Membership, Organization, User

        admin_org = Organization.objects.get(memberships__user__email=admin_email)
        member = User.objects.create_user(email=member_email, password=PASSWORD)
        own = Organization.objects.create(name="Member Own Org")
        Membership.objects.create(user=member, organization=own, role=Membership.Role.OWNER)
        Membership.objects.create(user=member, organization=admin_org)
        return admin_org.pk

    admin_org_id = read_db(add_member)
    with another_browser(page, live_server_url) as member_tab:
        sign_in(member_tab, member_email)
        member_tab.get_by_label("Organization").select_option(label="Browser Test Org")
        member_tab.get_by_role("button", name="Switch").click()
        expect(member_tab.get_by_label("Organization")).to_have_value(str(admin_org_id))
        expect_socket_open(member_tab)
        log_before = socket_log(member_tab)

        page.goto(f"/org/?org={admin_org_id}")
        page.evaluate("() => { window.confirm = () => true; }")  # the admin answers OK
        remove = page.get_by_role("button", name=f"Remove {member_email}")
        remove.click()
        expect(remove).to_have_count(0)

        # The tab reloads once into the org the member still has, with a new socket.
        expect(member_tab.locator(".org-name")).to_have_text("Member Own Org")
        expect_socket_open(member_tab)
        log_after = socket_log(member_tab)
        assert log_after[: len(log_before)] == log_before
        assert log_after[len(log_before):] == [4403, "new"]
        assert re.fullmatch(r"/(c/\d+/)?", urlsplit(member_tab.url).path)
