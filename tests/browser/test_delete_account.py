""""Delete my account" in headless Chromium: bob opens his account page, follows "Delete my
account", types a wrong password (nothing happens), then his password; he lands on the
sign-in page, cannot sign in again, and his conversation is gone while alice's stays."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Watch, read_db
from tests.browser.test_budgets import PASSWORD, sign_in

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def _conversation_for(email: str, text: str) -> None:
    from accounts.models import User
    from conversations.models import Conversation, Message
    from llm.models import ModelProfile

    user = User.objects.get(email=email)
    profile = ModelProfile.objects.order_by("pk").first()
    assert profile is not None
    conversation = Conversation.objects.create(
        user=user, organization=user.memberships.get().organization, profile=profile,
        title=text)
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content=text)


def _texts() -> set[str]:
    from conversations.models import Message

    # Erased messages stay as empty rows (the org's usage keeps its counts).
    return set(Message.objects.exclude(content="").values_list("content", flat=True))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_member_deletes_their_account_from_the_account_page(
    alice: Any, bob: Any, page: Any, live_server_url: str, watch: Watch
) -> None:
    read_db(lambda: _conversation_for("bob@example.com", "Bob's private plan"))
    read_db(lambda: _conversation_for("alice@example.com", "Alice's notes"))

    sign_in(page, "bob@example.com")
    expect(page.get_by_role("link", name="Bob's private plan")).to_be_visible()
    page.goto(f"{live_server_url}/account/")
    page.get_by_role("link", name="Delete my account").click()
    expect(page.get_by_role("heading", name="Delete my account")).to_be_visible()

    page.get_by_label("Your password").fill("not my password")
    page.get_by_role("button", name="Delete my account").click()
    expect(page.get_by_role("alert")).to_contain_text("That is not your password")
    assert "Bob's private plan" in read_db(_texts)

    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_role("button", name="Delete my account").click()
    page.wait_for_url(lambda url: url.endswith("/accounts/login/"))
    expect(page.get_by_text("Your account and your conversations were deleted.")).to_be_visible()

    assert read_db(_texts) == {"Alice's notes"}
    page.get_by_label("Email").fill("bob@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.url.endswith("/accounts/login/")
