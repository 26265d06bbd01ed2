"""Teams form in a real browser: invitations (new and existing accounts), closed sign-up,
domain sign-up, sign-in lockout and password reset, clicked as people click them in
headless Chromium against the real stack (uvicorn, Celery, PostgreSQL, Redis).

The invitation link comes from the "Invitation link" field the admin sees, never from
the mail outbox: an admin without SMTP must be able to invite. Links that only ever
travel by email (domain sign-up, password reset) are read from the outbox, which stands
in for the person's inbox.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import AllowedEmailDomain
from tests.browser.conftest import PASSWORD as NEW_PASSWORD
from tests.browser.conftest import Watch, read_db
from tests.browser.test_budgets import open_context, sign_in, watch_page

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


@pytest.fixture
def second_page(page: Any, live_server_url: str, watch: Watch) -> Iterator[Any]:
    """Another person's browser: a separate context with its own cookies."""
    context = open_context(page.context.browser, live_server_url, watch)
    other = context.new_page()
    watch_page(other, watch)
    try:
        yield other
    finally:
        context.close()


def _invite(page: Any, email: str, *, role: str = "member") -> str:
    page.goto("/org/")
    invite = page.get_by_role("region", name="Invite someone")
    invite.get_by_label("Email").fill(email)
    invite.get_by_label("Role").select_option(role)
    invite.get_by_role("button", name="Send invitation").click()
    link_field = page.get_by_label("Invitation link")
    expect(link_field).to_be_visible()
    expect(link_field).to_have_attribute("readonly", "")
    return link_field.input_value()


def _members(page: Any) -> Any:
    page.goto("/org/")
    return page.locator("table.org-table tbody")


def _outbox_link(pattern: str) -> str:
    for message in reversed(mail.outbox):
        match = re.search(pattern, str(message.body))
        if match:
            return match[0]
    raise AssertionError(f"no email with {pattern!r}")


def test_a_new_person_joins_through_an_invitation_link_with_no_mail(
    alice: Any, page: Any, second_page: Any, watch: Watch
) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, "alice@example.com")
    link = _invite(page, "dana@example.com")
    assert urlsplit(link).path.startswith("/invite/")
    page.get_by_role("button", name="Copy link").click()
    expect(page.get_by_text("Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == link
    # Shown once: a reload no longer shows it, the pending invitation is listed instead.
    page.reload()
    expect(page.get_by_label("Invitation link")).to_have_count(0)
    expect(page.get_by_text("dana@example.com as member")).to_be_visible()

    dana = second_page
    dana.goto(link)
    expect(dana.get_by_role("heading", name="Join Acme")).to_be_visible()
    dana.get_by_label("Password").fill(NEW_PASSWORD)
    dana.get_by_role("button", name="Create account and join").click()
    dana.wait_for_url(lambda url: urlsplit(url).path == "/")
    expect(dana.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    expect(dana.get_by_text("Welcome to Acme.")).to_be_visible()

    expect(_members(page)).to_contain_text("dana@example.com")
    assert read_db(lambda: list(
        alice.memberships.get().organization.memberships.filter(user__email="dana@example.com")
        .values_list("role", flat=True))) == ["member"]
    # The link worked once.
    dana.context.clear_cookies()
    dana.goto(link)
    expect(dana.get_by_text("already been used")).to_be_visible()
    assert not watch.page_errors and not watch.remote_requests


def test_a_person_with_an_account_signs_in_from_the_invitation_and_accepts(
    alice: Any, charlie: Any, page: Any, second_page: Any, watch: Watch
) -> None:
    sign_in(page, "alice@example.com")
    link = _invite(page, "charlie@example.com", role="admin")

    charlie_page = second_page
    charlie_page.goto(link)
    charlie_page.get_by_role("link", name="Sign in to accept").click()
    charlie_page.get_by_label("Email").fill("charlie@example.com")
    charlie_page.get_by_label("Password").fill("correct horse battery staple")
    charlie_page.get_by_role("button", name="Sign in").click()
    charlie_page.wait_for_url(lambda url: urlsplit(url).path.startswith("/invite/"))
    charlie_page.get_by_role("button", name="Accept invitation").click()
    charlie_page.wait_for_url(lambda url: urlsplit(url).path == "/")
    expect(charlie_page.get_by_text("Welcome to Acme.")).to_be_visible()
    # He lands in Acme's chat (now his current org) and, as an admin, sees Members.
    expect(charlie_page.get_by_label("Organization")).to_have_value(
        str(read_db(lambda: alice.memberships.get().organization_id)))
    expect(charlie_page.get_by_role("link", name="Members")).to_be_visible()

    expect(_members(page)).to_contain_text("charlie@example.com")
    assert not watch.page_errors


def test_resend_gives_a_fresh_link_and_the_old_one_stops_working(
    alice: Any, page: Any, second_page: Any
) -> None:
    sign_in(page, "alice@example.com")
    old = _invite(page, "dana@example.com")
    page.reload()
    page.get_by_role("button", name="Resend").click()
    new = page.get_by_label("Invitation link").input_value()
    assert new != old
    second_page.goto(old)
    expect(second_page.get_by_text("withdrawn")).to_be_visible()
    second_page.goto(new)
    expect(second_page.get_by_role("button", name="Create account and join")).to_be_visible()


def test_signup_is_closed_to_strangers_after_the_first_account(alice: Any, page: Any) -> None:
    page.goto("/accounts/signup/")
    expect(page.get_by_role("heading", name="Sign-up is by invitation")).to_be_visible()
    expect(page.get_by_text("ask your admin for an invitation")).to_be_visible()
    expect(page.get_by_label("Password")).to_have_count(0)
    page.get_by_label("Email").fill("stranger@example.org")
    page.get_by_role("button", name="Email me a link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    assert not read_db(lambda: type(alice).objects.filter(email="stranger@example.org").exists())
    assert not mail.outbox


def test_a_colleague_at_an_allowed_domain_signs_up_into_the_org(
    alice: Any, page: Any, second_page: Any
) -> None:
    read_db(lambda: type(alice).objects.filter(pk=alice.pk).update(email_verified_at=timezone.now()))
    sign_in(page, "alice@example.com")
    page.goto("/org/")
    page.get_by_label("Allowed email domains").fill("example.com")
    page.get_by_role("button", name="Save domains").click()
    expect(page.get_by_text("People at example.com may now join as members.")).to_be_visible()

    erin = second_page
    erin.goto("/accounts/signup/")
    erin.get_by_label("Email").fill("erin@example.com")
    erin.get_by_role("button", name="Email me a link").click()
    expect(erin.get_by_role("heading", name="Check your email")).to_be_visible()
    erin.goto(_outbox_path("/accounts/signup/finish/"))
    expect(erin.get_by_text("joining Acme as a member")).to_be_visible()
    erin.get_by_label("Password").fill(NEW_PASSWORD)
    erin.get_by_role("button", name="Create account and join").click()
    erin.wait_for_url(lambda url: urlsplit(url).path == "/")
    expect(_members(page)).to_contain_text("erin@example.com")


def _outbox_path(prefix: str) -> str:
    """The path of the newest mailed link under ``prefix``, opened on this test's server."""
    return urlsplit(_outbox_link(rf"https?://[^/\s]+{re.escape(prefix)}[^\s]+/")).path


def test_an_admin_cannot_claim_a_domain_through_an_invitation_link_they_were_shown(
    alice: Any, page: Any, second_page: Any, watch: Watch
) -> None:
    sign_in(page, "alice@example.com")
    link = _invite(page, "it-admin@bigcorp.test", role="admin")

    # The admin opens the shown link in another browser and signs up as the invitee,
    # without ever reading that mailbox.
    it_admin = second_page
    it_admin.goto(urlsplit(link).path)  # the shown link, on this test's server
    it_admin.get_by_label("Password").fill(NEW_PASSWORD)
    it_admin.get_by_role("button", name="Create account and join").click()
    it_admin.wait_for_url(lambda url: urlsplit(url).path == "/")
    it_admin.goto("/org/")
    it_admin.get_by_label("Allowed email domains").fill("bigcorp.test")
    it_admin.get_by_role("button", name="Save domains").click()
    expect(it_admin.get_by_role("alert")).to_contain_text(
        "Verify your address it-admin@bigcorp.test first")
    expect(it_admin.get_by_role("button", name="Send verification link")).to_be_visible()

    # The action mails the link; no page shows it, so the claim stays refused.
    it_admin.get_by_role("button", name="Send verification link").click()
    expect(it_admin.get_by_text("We emailed a verification link to it-admin@bigcorp.test"))\
        .to_be_visible()
    mailed = _outbox_path("/accounts/verify-email/")
    assert mailed not in it_admin.content()
    it_admin.get_by_label("Allowed email domains").fill("bigcorp.test")
    it_admin.get_by_role("button", name="Save domains").click()
    expect(it_admin.get_by_role("alert")).to_contain_text("Verify your address")

    user_model = type(alice)
    assert read_db(lambda: AllowedEmailDomain.objects.count()) == 0
    assert read_db(lambda: user_model.objects.get(email="it-admin@bigcorp.test")
                   .email_verified_at) is None
    assert [m.to for m in mail.outbox if "/accounts/verify-email/" in m.body] == [
        ["it-admin@bigcorp.test"]]
    assert not watch.page_errors


def test_an_admin_verified_by_the_mailed_link_claims_the_domain(alice: Any, page: Any) -> None:
    sign_in(page, "alice@example.com")
    page.goto("/org/")
    page.get_by_role("button", name="Send verification link").click()
    expect(page.get_by_text("We emailed a verification link to alice@example.com")).to_be_visible()
    page.goto(_outbox_path("/accounts/verify-email/"))
    page.get_by_role("button", name="Verify email address").click()
    expect(page.get_by_text("alice@example.com is verified.")).to_be_visible()

    page.goto("/org/")
    expect(page.get_by_role("button", name="Send verification link")).to_have_count(0)
    page.get_by_label("Allowed email domains").fill("example.com")
    page.get_by_role("button", name="Save domains").click()
    expect(page.get_by_text("People at example.com may now join as members.")).to_be_visible()
    assert read_db(lambda: list(AllowedEmailDomain.objects.values_list("domain", flat=True))) == [
        "example.com"]


def test_open_signup_through_the_emailed_link(alice: Any, page: Any, settings: Any) -> None:
    settings.SIGNUP = "open"
    page.goto("/accounts/signup/")
    page.get_by_label("Email").fill("frank@example.org")
    page.get_by_label("Organization name").fill("Frank's Team")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    page.goto(_outbox_link(r"http://127\.0\.0\.1:\d+/accounts/signup/finish/[^\s]+/"))
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    budget = read_db(lambda: str(type(alice).objects.get(email="frank@example.org")
                                 .memberships.get().organization.monthly_budget_usd))
    assert budget == "5.00"


def test_ten_wrong_passwords_pause_sign_in_with_a_clear_message(alice: Any, page: Any,
                                                                settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        page.goto("/accounts/login/")
        page.get_by_label("Email").fill("alice@example.com")
        page.get_by_label("Password").fill("not her password")
        page.get_by_role("button", name="Sign in").click()
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill("alice@example.com")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Sign-in paused")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("15 minutes")
    assert urlsplit(page.url).path == "/accounts/login/"


def test_forgot_password_resets_it_through_the_emailed_link(alice: Any, page: Any) -> None:
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Forgot password?").click()
    page.get_by_label("Email").fill("alice@example.com")
    page.get_by_role("button", name="Send reset link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    page.goto(_outbox_link(r"http://127\.0\.0\.1:\d+/accounts/password/reset/[^\s]+/"))
    page.get_by_label("New password", exact=True).fill("a brand new pass phrase 99")
    page.get_by_label("Repeat new password").fill("a brand new pass phrase 99")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("heading", name="Password changed")).to_be_visible()
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Email").fill("alice@example.com")
    page.get_by_label("Password").fill("a brand new pass phrase 99")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
