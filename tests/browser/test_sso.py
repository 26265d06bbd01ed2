"""Single sign-on journeys in headless Chromium against the real stack and a real OpenID
provider (the oidc-provider package, tests/oidc.py): the first sign-in creates the account,
groups from the provider decide which models a person is offered (and follow a changed
claim at the next sign-in), "SSO only" refuses the password form, sign-out also ends the
provider's session, and an address the provider has not verified is refused."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import read_db
from tests.oidc import SSO

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OWNER_PASSWORD = "an owner's break-glass passphrase 7"
MEMBER_PASSWORD = "a member's old passphrase 8"


def at_home(url: str) -> bool:
    return urlsplit(url).path == "/"


def through_provider(page: Any, login: str) -> None:
    """At the provider: its login form (unless its session still knows the browser), then
    back to the app."""
    page.wait_for_url(lambda url: at_home(url) or "/interaction/" in url
                      or "/accounts/sso/" in url)
    if "/interaction/" in page.url:
        page.locator("input[name=login]").fill(login)
        page.locator("input[name=password]").fill("any password")
        page.get_by_role("button", name="Sign-in").click()
    page.wait_for_url(at_home)
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")


def sign_in_with_provider(page: Any, login: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Corp ID").click()
    through_provider(page, login)


def sign_out(page: Any, issuer: str) -> None:
    """Sign out here, then confirm at the provider (RP-initiated logout), which sends the
    browser back to the sign-in page."""
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(lambda url: url.startswith(issuer))
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/accounts/login/")


def offered_models(page: Any) -> list[str]:
    """The model names the composer offers (none when it offers a single model)."""
    if page.locator("#profile-field").is_hidden():
        return [page.get_by_test_id("model-name").inner_text()]
    return page.locator("#profile-select option").evaluate_all("els => els.map(e => e.value)")


@contextmanager
def another_browser(page: Any, base_url: str) -> Iterator[Any]:
    context = page.context.browser.new_context(base_url=base_url)
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def research_keeps_sol(sso: SSO) -> None:
    """Two more models for Corp: sol, which the Research group (provider group
    "engineering") keeps, and luna, which no group lists."""
    def make() -> None:
        from accounts.models import Group
        from llm.models import ModelProfile

        seed = ModelProfile.objects.get(name="o3-mini")
        own = ("id", "origin", "catalog_key", "catalog_values", "listed_at")
        values = {f.name: getattr(seed, f.name) for f in ModelProfile._meta.fields
                  if f.name not in own}
        made = {}
        for name, display in (("sol", "GPT-5.6 Sol"), ("luna", "Luna")):
            made[name] = ModelProfile.objects.create(**{
                **values, "name": name, "display_name": display, "model": f"gpt-{name}",
                "shutdown_date": None})
        group = Group.objects.create(organization=sso.organization, name="Research",
                                     claim_value="engineering")
        group.profiles.set([made["sol"]])

    read_db(make)


def test_the_first_sign_in_with_the_provider_creates_the_account(sso: SSO, page: Any) -> None:
    page.goto("/accounts/login/")
    button = page.get_by_role("link", name="Sign in with Corp ID")
    expect(button).to_be_visible()
    button.click()

    through_provider(page, "ada@corp.test")

    def account() -> Any:
        from accounts.models import ExternalIdentity, Membership

        membership = Membership.objects.select_related("user").get(user__email="ada@corp.test")
        return (membership.organization_id, membership.role,
                ExternalIdentity.objects.filter(user=membership.user).count())

    assert read_db(account) == (sso.organization.pk, "member", 1)


def test_an_address_at_the_orgs_domain_goes_to_the_provider_from_the_sign_in_form(
        sso: SSO, page: Any) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill("ada@corp.test")
    page.get_by_role("button", name="Sign in", exact=True).click()

    through_provider(page, "ada@corp.test")
    issued = sso.idp.issued()
    assert [claims["email"] for claims in issued] == ["ada@corp.test"]


def test_a_group_claim_hides_a_model_and_a_changed_claim_at_the_next_sign_in_shows_it(
        sso: SSO, page: Any) -> None:
    research_keeps_sol(sso)

    # Ada's provider groups include "engineering": Research's sol is hers.
    sign_in_with_provider(page, "ada@corp.test")
    assert "sol" in offered_models(page)

    # Ben's do not: sol is not offered, luna (no group lists it) is.
    with another_browser(page, sso.site) as ben:
        sign_in_with_provider(ben, "ben@corp.test")
        assert "sol" not in offered_models(ben) and "luna" in offered_models(ben)

        # His groups change at the provider; at his next sign-in he is in Research.
        sso.idp.set_person("ben@corp.test", {**sso.people["ben@corp.test"],
                                             "groups": ["sales", "engineering"]})
        sign_out(ben, sso.idp.issuer)
        sign_in_with_provider(ben, "ben@corp.test")
        assert "sol" in offered_models(ben)

    # And Ada leaves "engineering": her next sign-in takes sol away.
    sso.idp.set_person("ada@corp.test", {**sso.people["ada@corp.test"], "groups": []})
    sign_out(page, sso.idp.issuer)
    sign_in_with_provider(page, "ada@corp.test")
    assert "sol" not in offered_models(page)


def test_sign_out_ends_the_session_here_and_at_the_provider(sso: SSO, page: Any) -> None:
    sign_in_with_provider(page, "ada@corp.test")

    # RP-initiated logout: the provider asks to confirm, then sends the browser back.
    sign_out(page, sso.idp.issuer)
    page.goto("/")
    page.wait_for_url(lambda url: urlsplit(url).path == "/accounts/login/")
    # The provider forgot the browser too: signing in asks for the login again.
    page.get_by_role("link", name="Sign in with Corp ID").click()
    page.wait_for_url(lambda url: "/interaction/" in url)


def test_sso_only_refuses_the_password_form_for_members_and_keeps_the_owners(
        sso: SSO, page: Any) -> None:
    def setup() -> None:
        from accounts.models import IdentityProvider, Membership, User

        member = User.objects.create_user(email="pat@corp.test", password=MEMBER_PASSWORD)
        Membership.objects.create(user=member, organization=sso.organization, role="member")
        owner = User.objects.create_user(email="owner@corp.test", password=OWNER_PASSWORD)
        Membership.objects.create(user=owner, organization=sso.organization, role="owner")
        IdentityProvider.objects.filter(pk=sso.identity_provider.pk).update(sso_only=True)

    read_db(setup)
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill("pat@corp.test")
    page.get_by_label("Password").fill(MEMBER_PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()

    expect(page.get_by_role("alert")).to_contain_text("Corp signs in with Corp ID only")
    assert urlsplit(page.url).path == "/accounts/login/"

    # Password reset is refused too: the page looks the same, no mail is sent.
    page.goto("/accounts/password/reset/")
    page.get_by_label("Email").fill("pat@corp.test")
    page.get_by_role("button", name="Send reset link").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/accounts/password/reset/sent/")
    from django.core import mail

    assert [m.to for m in mail.outbox] == []

    # The owner's break-glass password still works.
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill("owner@corp.test")
    page.get_by_label("Password").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(at_home)


def test_an_address_the_provider_has_not_verified_is_refused_in_the_browser(
        sso: SSO, page: Any) -> None:
    sign_in_with_provider_refused(page, "una@corp.test")

    expect(page.get_by_role("alert")).to_contain_text("has not verified una@corp.test")

    def nothing() -> int:
        from accounts.models import User

        return User.objects.filter(email="una@corp.test").count()

    assert read_db(nothing) == 0


def sign_in_with_provider_refused(page: Any, login: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Corp ID").click()
    page.wait_for_url(lambda url: "/interaction/" in url)
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    page.wait_for_url(lambda url: "/accounts/sso/" in url and "/callback/" in url)
    expect(page.get_by_role("heading", name="You are not signed in")).to_be_visible()

