"""A tab over MAX_SOCKETS_PER_USER, in headless Chromium against the real stack: its page
says why it has no connection and what to do, and it does not keep retrying."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import sign_up

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COUNT_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.socketsOpened = 0;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.socketsOpened += 1;
    }
  };
})();
"""


def test_a_tab_over_the_socket_cap_says_so_and_stops_retrying(page: Any, settings: Any) -> None:
    settings.MAX_SOCKETS_PER_USER = 2
    sign_up(page)  # the first tab, connected
    second = page.context.new_page()
    second.goto("/")
    expect(second.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")

    third = page.context.new_page()
    third.add_init_script(COUNT_SOCKETS)
    third.goto("/")
    status = third.get_by_test_id("connection-status")
    expect(status).to_have_attribute("data-state", "closed")
    expect(status).to_have_text(
        "Too many chat tabs are open for your account. Close some of them, then reload this page.")
    third.wait_for_timeout(1500)  # several times the first reconnect delay (250 ms)
    assert third.evaluate("window.socketsOpened") == 1

    # With one tab closed, a reload connects.
    second.close()
    third.reload()
    expect(third.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
