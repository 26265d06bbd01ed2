"""The audit log in headless Chromium: alice (owner) makes bob an admin, bob signs in with
a wrong password and then the right one, alice shares a conversation and revokes the
link; then alice opens "Audit log", finds each entry, filters by action and by person,
and downloads the CSV of what she filtered."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from accounts.models import Membership
from tests.browser.conftest import Watch, read_db
from tests.browser.test_budgets import open_context, sign_in, watch_page
from tests.sharing.conftest import make_conversation

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

RIGHT = "correct horse battery staple"  # tests/conftest.make_user's password


def _ids(bob: Any) -> tuple[int, int]:
    membership = Membership.objects.get(user=bob)
    return membership.organization_id, membership.pk


def _conversation(alice: Any) -> int:
    return make_conversation(alice, title="Quarterly numbers").pk


def _audit_rows(page: Any) -> Any:
    return page.get_by_role("table", name="Audit entries").locator("tbody tr")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_admin_finds_filters_and_downloads_the_audit_log(
    alice: Any, bob: Any, page: Any, live_server_url: str, watch: Watch, tmp_path: Path
) -> None:
    org_id, bob_membership = read_db(lambda: _ids(bob))
    conversation_id = read_db(lambda: _conversation(alice))

    # alice makes bob an admin on the Members page.
    sign_in(page, "alice@example.com")
    page.goto("/org/")
    row = page.locator(f"#member-{bob_membership}")
    row.get_by_label("Role").select_option("admin")
    row.get_by_role("button", name="Change role of bob@example.com").click()
    expect(page.get_by_text("bob@example.com is now admin.")).to_be_visible()

    # bob mistypes his password, then signs in.
    bob_context = open_context(page.context.browser, live_server_url, watch)
    try:
        bob_page = bob_context.new_page()
        watch_page(bob_page, watch)
        bob_page.goto("/accounts/login/")
        bob_page.get_by_label("Email").fill("bob@example.com")
        bob_page.get_by_label("Password").fill("not my password")
        bob_page.get_by_role("button", name="Sign in").click()
        expect(bob_page.get_by_role("alert")).to_be_visible()
        bob_page.get_by_label("Email").fill("bob@example.com")
        bob_page.get_by_label("Password").fill(RIGHT)
        bob_page.get_by_role("button", name="Sign in").click()
        bob_page.wait_for_url(lambda url: urlsplit(url).path == "/")
    finally:
        bob_context.close()

    # alice shares a conversation with her org, then revokes the link.
    page.goto(f"/c/{conversation_id}/share/")
    page.get_by_label("Who can open it").select_option(label="Members of Acme")
    page.get_by_label("Expires").select_option(label="Never")
    page.get_by_role("button", name="Create link").click()
    expect(page.get_by_label("Share link")).to_have_value(re.compile(r"/s/[A-Za-z0-9_-]+/$"))
    page.goto("/shared/")
    page.get_by_role("row").filter(has_text="Quarterly numbers").get_by_role(
        "button", name="Revoke").click()
    expect(page.get_by_text("Link revoked.")).to_be_visible()

    # The audit log, from the org navigation.
    page.goto("/org/")
    page.get_by_role("navigation", name="Organization admin").get_by_role(
        "link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
    rows = _audit_rows(page)
    for action in ("member.role_changed", "auth.sign_in_failed", "auth.sign_in",
                   "share.created", "share.revoked"):
        expect(rows.filter(has_text=action).first).to_be_visible()
    role_row = rows.filter(has_text="member.role_changed")
    expect(role_row).to_contain_text("alice@example.com")
    expect(role_row).to_contain_text("member → admin")
    failed = rows.filter(has_text="auth.sign_in_failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("bob@example.com")
    expect(failed).to_contain_text("Failure")
    expect(failed).to_contain_text("127.0.0.1")

    # Filter by action.
    page.get_by_label("Action").select_option("share.revoked")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Share link revoked")

    # Filter by person: bob's entries only, by him or about him.
    page.get_by_label("Action").select_option("")
    page.get_by_label("Person").select_option(label="bob@example.com")
    page.get_by_role("button", name="Filter").click()
    expect(rows.filter(has_text="share.created")).to_have_count(0)
    for action in ("auth.sign_in_failed", "auth.sign_in", "member.role_changed"):
        expect(rows.filter(has_text=action).first).to_be_visible()

    # The CSV holds exactly the filtered rows.
    shown = rows.count()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename.startswith(f"audit-org{org_id}-")
    saved = tmp_path / "audit.csv"
    download.save_as(saved)
    with saved.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == shown
    actions = [row["action"] for row in table]
    assert {"auth.sign_in_failed", "auth.sign_in", "member.role_changed"} <= set(actions)
    assert "share.created" not in actions
    failed_rows = [row for row in table if row["action"] == "auth.sign_in_failed"]
    assert [(r["person"], r["outcome"], r["client_ip"]) for r in failed_rows] == [
        ("bob@example.com", "failure", "127.0.0.1")]
    assert "not my password" not in saved.read_text()
    assert watch.page_errors == [] and watch.remote_requests == []
