"""“SSO only” per org: its members can neither sign in with a password nor get a reset
mail; its owners keep their password (break-glass). And the sign-in form sends an address
at an org's SSO domain to the provider."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.test import Client

from accounts.models import AllowedEmailDomain, IdentityProvider, Membership, Organization, User

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture
def provider(org_a: Organization) -> IdentityProvider:
    AllowedEmailDomain.objects.create(organization=org_a, domain="example.com")
    return IdentityProvider.objects.create(
        organization=org_a, display_name="Acme ID",
        discovery_url="https://id.example.com/.well-known/openid-configuration",
        client_id="teamchat", client_secret_env="OIDC_CLIENT_SECRET_ACME", sso_only=True,
    )


def sign_in(email: str, password: str) -> Any:
    return Client().post("/accounts/login/", {"username": email, "password": password})


def test_a_member_of_an_sso_only_org_cannot_sign_in_with_a_password(
        bob: User, provider: IdentityProvider) -> None:
    response = sign_in("bob@example.com", PASSWORD)

    assert response.status_code == 200
    assert "Acme signs in with Acme ID only" in response.content.decode()
    assert "_auth_user_id" not in response.wsgi_request.session


def test_the_owner_keeps_a_break_glass_password(alice: User, provider: IdentityProvider) -> None:
    response = sign_in("alice@example.com", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/"


def test_without_sso_only_a_member_still_signs_in_with_a_password(
        bob: User, provider: IdentityProvider) -> None:
    IdentityProvider.objects.filter(pk=provider.pk).update(sso_only=False)
    assert sign_in("bob@example.com", PASSWORD).status_code == 302


def test_a_member_of_an_sso_only_org_gets_no_reset_mail_and_the_owner_does(
        alice: User, bob: User, provider: IdentityProvider) -> None:
    browser = Client()
    response = browser.post("/accounts/password/reset/", {"email": "bob@example.com"})
    assert response.status_code == 302  # the same answer as for any address
    assert mail.outbox == []

    browser.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]


def test_an_admin_in_another_org_is_still_refused_here(
        bob: User, charlie: User, provider: IdentityProvider) -> None:
    Membership.objects.create(user=charlie, organization=provider.organization, role="admin")
    response = sign_in("charlie@example.com", PASSWORD)
    assert "signs in with Acme ID only" in response.content.decode()


def test_an_address_at_the_sso_domain_with_no_password_goes_to_the_provider(
        provider: IdentityProvider) -> None:
    response = Client().post("/accounts/login/", {"username": "dana@example.com", "password": ""})

    assert response.status_code == 200
    page = response.content.decode()
    start = f"/accounts/sso/{provider.pk}/start/?login_hint=dana%40example.com"
    assert start in page and f'content="0;url={start}' in page
    assert "Continue to Acme ID" in page


def test_the_sign_in_page_offers_the_provider_button(provider: IdentityProvider) -> None:
    page = Client().get("/accounts/login/").content.decode()
    assert f'href="/accounts/sso/{provider.pk}/start/">Sign in with Acme ID</a>' in page


def test_a_switched_off_provider_is_not_offered_and_its_start_link_says_so(
        bob: User, provider: IdentityProvider) -> None:
    IdentityProvider.objects.filter(pk=provider.pk).update(enabled=False)
    browser = Client()
    assert "Sign in with Acme ID" not in browser.get("/accounts/login/").content.decode()
    response = browser.get(f"/accounts/sso/{provider.pk}/start/")
    assert response.status_code == 503 and "not in use" in response.content.decode()
    # With SSO switched off, the org's members use passwords again.
    assert sign_in("bob@example.com", PASSWORD).status_code == 302


def test_a_missing_client_secret_is_said_plainly(provider: IdentityProvider,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OIDC_CLIENT_SECRET_ACME", raising=False)
    monkeypatch.delenv("OIDC_CLIENT_SECRET_ACME_FILE", raising=False)
    response = Client().get(f"/accounts/sso/{provider.pk}/start/")
    assert response.status_code == 503
    assert "OIDC_CLIENT_SECRET_ACME is empty" in response.content.decode()


def test_the_client_secret_is_read_from_a_file(provider: IdentityProvider, tmp_path: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from accounts import sso

    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.delenv("OIDC_CLIENT_SECRET_ACME", raising=False)
    monkeypatch.setenv("OIDC_CLIENT_SECRET_ACME_FILE", str(secret))
    assert sso.client_secret(provider) == "from-a-file"


def test_the_secret_variable_must_be_one_made_for_it(provider: IdentityProvider) -> None:
    from django.core.exceptions import ValidationError

    provider.client_secret_env = "SECRET_KEY"
    with pytest.raises(ValidationError):
        provider.full_clean()


def test_admins_set_sso_only_and_the_groups_claim_and_members_cannot(
        alice: User, bob: User, charlie: User, provider: IdentityProvider) -> None:
    browser = Client()
    browser.force_login(alice)
    page = browser.get("/org/sso/")
    assert page.status_code == 200
    assert f"/accounts/sso/{provider.pk}/callback/" in page.content.decode()

    response = browser.post("/org/sso/", {"groups_claim": "roles"})
    assert response.status_code == 302
    provider.refresh_from_db()
    assert (provider.sso_only, provider.groups_claim) == (False, "roles")

    browser.force_login(bob)
    assert browser.get("/org/sso/").status_code == 404
    assert browser.post("/org/sso/", {"sso_only": "on", "groups_claim": "x"}).status_code == 404
    browser.force_login(charlie)
    assert browser.post(f"/org/sso/?org={provider.organization_id}",
                        {"sso_only": "on", "groups_claim": "x"}).status_code == 404
    provider.refresh_from_db()
    assert (provider.sso_only, provider.groups_claim) == (False, "roles")
