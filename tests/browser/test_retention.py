"""Retention as an admin sets it, in headless Chromium: alice fills in the "Retention"
section of the Members page and saves; bob, a member, then sees the policy under the
composer on his chat page, and is never offered the setting."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Watch, read_db
from tests.browser.test_budgets import open_context, sign_in, watch_page

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def _retention(org_id: int) -> tuple[int | None, bool]:
    from accounts.models import Organization

    organization = Organization.objects.get(pk=org_id)
    return organization.retention_days, organization.retention_keep_shares


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_admin_turns_retention_on_and_a_member_sees_it_on_the_chat_page(
    alice: Any, bob: Any, page: Any, live_server_url: str, watch: Watch
) -> None:
    org_id = read_db(lambda: alice.memberships.get().organization_id)
    assert read_db(lambda: _retention(org_id)) == (None, True)

    sign_in(page, "alice@example.com")
    page.goto(f"{live_server_url}/org/")
    section = page.get_by_role("region", name="Retention")
    expect(section).to_contain_text("Off: conversations are kept until their owners delete them.")
    section.get_by_label("Delete conversations untouched for (days)").fill("90")
    section.get_by_role("checkbox", name="Also delete their share links").check()
    section.get_by_role("button", name="Save retention").click()
    expect(page.get_by_text("Retention is on: every day, conversations untouched for 90 days "
                            "are deleted")).to_be_visible()
    section = page.get_by_role("region", name="Retention")
    expect(section.get_by_label("Delete conversations untouched for (days)")).to_have_value("90")
    expect(section.get_by_role("checkbox", name="Also delete their share links")).to_be_checked()
    assert read_db(lambda: _retention(org_id)) == (90, False)

    bob_context = open_context(page.context.browser, live_server_url, watch)
    try:
        bob_page = bob_context.new_page()
        watch_page(bob_page, watch)
        sign_in(bob_page, "bob@example.com")
        expect(bob_page.get_by_test_id("retention-notice")).to_have_text(
            "Conversations older than 90 days are deleted (counted from their last message).")
        expect(bob_page.get_by_role("note").filter(
            has_text="Conversations older than 90 days are deleted")).to_be_visible()
        bob_page.goto(f"{live_server_url}/org/")
        expect(bob_page.get_by_role("region", name="Retention")).to_have_count(0)
    finally:
        bob_context.close()
    assert read_db(lambda: _retention(org_id)) == (90, False)
    assert watch.page_errors == [] and watch.remote_requests == []
