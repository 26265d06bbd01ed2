"""The notice before a model shuts down, in headless Chromium: alice (owner of org A) sees
it on the chat page naming both models; bob, a member of the same org, does not."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from tests.browser.conftest import Watch, read_db
from tests.browser.test_budgets import open_context, sign_in, watch_page

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def retiring_default(org_id: int) -> dict[str, str]:
    """org A's default: o3 with a shutdown date 10 days from today (so the test does not
    depend on the real 2026-12-11), successor gpt-6-sol."""
    from accounts.models import Organization
    from llm.catalog.sync import ensure_catalog_profile
    from llm.models import ModelProfile

    successor = ensure_catalog_profile("openai:gpt-6-sol")
    o3 = ensure_catalog_profile("openai:o3")
    assert successor is not None and o3 is not None and o3.successor == successor.catalog_key
    ModelProfile.objects.filter(pk=o3.pk).update(
        shutdown_date=timezone.localdate() + dt.timedelta(days=10))
    Organization.objects.filter(pk=org_id).update(default_profile=o3)
    return {"old": o3.display_name, "new": successor.display_name}


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_admin_sees_the_shutdown_notice_naming_both_models_and_a_member_does_not(
    alice: Any, bob: Any, page: Any, live_server_url: str, watch: Watch
) -> None:
    org_id = read_db(lambda: alice.memberships.get().organization_id)
    names = read_db(lambda: retiring_default(org_id))

    sign_in(page, "alice@example.com")
    notice = page.get_by_role("status").filter(has_text="shuts down on")
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text(f"{names['old']} shuts down on ")
    expect(notice).to_contain_text(f"Your org's default model moves to {names['new']} on ")
    expect(page.get_by_test_id("retirement-notice")).to_be_visible()

    bob_context = open_context(page.context.browser, live_server_url, watch)
    try:
        bob_page = bob_context.new_page()
        watch_page(bob_page, watch)
        sign_in(bob_page, "bob@example.com")
        expect(bob_page.get_by_test_id("composer")).to_be_visible()
        expect(bob_page.get_by_test_id("retirement-notice")).to_have_count(0)
        expect(bob_page.get_by_text("shuts down on")).to_have_count(0)
    finally:
        bob_context.close()
    assert watch.page_errors == [] and watch.remote_requests == []
