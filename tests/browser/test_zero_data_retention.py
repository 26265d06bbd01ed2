"""Zero Data Retention as an admin switches it, in headless Chromium: alice ticks it on
the Members page, saves, sees it kept, and her org's answers are no longer stored at the
provider; bob, a member, is never offered the switch."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Watch, read_db
from tests.browser.test_budgets import open_context, sign_in, watch_page

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def _zero_data_retention(org_id: int) -> bool:
    from accounts.models import Organization

    return Organization.objects.get(pk=org_id).zero_data_retention


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_admin_turns_on_zero_data_retention_and_a_member_cannot(
    alice: Any, bob: Any, page: Any, live_server_url: str, watch: Watch
) -> None:
    org_id = read_db(lambda: alice.memberships.get().organization_id)
    assert read_db(lambda: _zero_data_retention(org_id)) is False

    sign_in(page, "alice@example.com")
    page.goto(f"{live_server_url}/org/")
    switch = page.get_by_role("checkbox", name="Zero Data Retention")
    expect(switch).not_to_be_checked()
    switch.check()
    page.get_by_role("button", name="Save data setting").click()
    expect(page.get_by_text("Zero Data Retention is on")).to_be_visible()
    expect(page.get_by_role("checkbox", name="Zero Data Retention")).to_be_checked()
    assert read_db(lambda: _zero_data_retention(org_id)) is True

    bob_context = open_context(page.context.browser, live_server_url, watch)
    try:
        bob_page = bob_context.new_page()
        watch_page(bob_page, watch)
        sign_in(bob_page, "bob@example.com")
        bob_page.goto(f"{live_server_url}/org/")
        expect(bob_page.get_by_role("checkbox", name="Zero Data Retention")).to_have_count(0)
    finally:
        bob_context.close()
    assert read_db(lambda: _zero_data_retention(org_id)) is True
    assert watch.page_errors == [] and watch.remote_requests == []
