"""Single sign-on against a real OpenID provider (tests/oidc.py), over real HTTP: the
first sign-in creates the account, a second links, groups follow the claim, and every
refusal case writes nothing."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest

from accounts.models import (
    AuditEntry,
    ExternalIdentity,
    Group,
    GroupMembership,
    Membership,
    User,
)
from tests.oidc import SSO, counts, query_of

pytestmark = pytest.mark.django_db(transaction=True)


def signed_in_home(result: Any) -> bool:
    response = result.response
    return response.status_code == 302 and response.headers["Location"] == "/"


def test_the_first_sign_in_creates_the_account_and_membership(sso: SSO) -> None:
    result = sso.http_sign_in("ada@corp.test")

    assert signed_in_home(result), result.response.text[:400]
    user = User.objects.get(email="ada@corp.test")
    assert not user.has_usable_password()
    assert user.email_verified_at is not None
    membership = Membership.objects.get(user=user)
    assert (membership.organization, membership.role) == (sso.organization, "member")
    identity = ExternalIdentity.objects.get(user=user)
    assert identity.issuer == sso.idp.issuer and identity.subject == "ada@corp.test"
    # The session is a real one: the chat page answers instead of the sign-in page.
    page = result.session.get(f"{sso.site}/", allow_redirects=False, timeout=10)
    assert page.status_code == 200
    sign_in = AuditEntry.objects.get(action="auth.sign_in")
    assert sign_in.details == {"method": "oidc"} and sign_in.organization_id == sso.organization.pk


def test_the_flow_uses_pkce_state_and_nonce(sso: SSO) -> None:
    import requests

    response = requests.get(f"{sso.site}{sso.start_path}", allow_redirects=False, timeout=10)
    query = query_of(response.headers["Location"])
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) >= 43
    assert query["state"] and query["nonce"] and query["response_type"] == "code"
    assert query["client_id"] == "teamchat-test"


def test_a_second_sign_in_finds_the_same_account(sso: SSO) -> None:
    assert signed_in_home(sso.http_sign_in("ada@corp.test"))
    assert signed_in_home(sso.http_sign_in("ada@corp.test"))

    assert counts() == {"users": 1, "memberships": 1, "identities": 1, "group_memberships": 0}


def test_an_existing_local_account_is_linked_not_duplicated(sso: SSO) -> None:
    local = User.objects.create_user(email="ada@corp.test", password="a local passphrase 12")

    assert signed_in_home(sso.http_sign_in("ada@corp.test"))

    assert User.objects.filter(email="ada@corp.test").get() == local
    assert ExternalIdentity.objects.get().user == local
    assert Membership.objects.get(user=local).organization == sso.organization
    linked = AuditEntry.objects.get(action="auth.sso_linked")
    assert linked.actor_id == local.pk and linked.details["method"] == "oidc"


def test_a_group_claim_puts_the_person_in_the_mapped_group_and_a_changed_claim_moves_them(
        sso: SSO) -> None:
    engineering = Group.objects.create(organization=sso.organization, name="Engineering",
                                       claim_value="engineering")
    sales = Group.objects.create(organization=sso.organization, name="Sales", claim_value="sales")
    assert signed_in_home(sso.http_sign_in("ada@corp.test"))
    ada = User.objects.get(email="ada@corp.test")
    assert set(GroupMembership.objects.filter(user=ada).values_list("group", flat=True)) == {
        engineering.pk}

    sso.idp.set_person("ada@corp.test", {**sso.people["ada@corp.test"], "groups": ["sales"]})
    assert signed_in_home(sso.http_sign_in("ada@corp.test"))

    assert set(GroupMembership.objects.filter(user=ada).values_list("group", flat=True)) == {
        sales.pk}
    synced = AuditEntry.objects.filter(action="group.changed").order_by("at", "id").last()
    assert synced is not None
    assert synced.details == {"change": "synced_at_sign_in", "joined": ["Sales"],
                              "left": ["Engineering"]}


def test_a_group_role_floor_makes_its_members_admins_until_they_leave_it(sso: SSO) -> None:
    Group.objects.create(organization=sso.organization, name="Leads", claim_value="engineering",
                         role_floor="admin")
    assert signed_in_home(sso.http_sign_in("ada@corp.test"))
    assert Membership.objects.get(user__email="ada@corp.test").role == "admin"

    sso.idp.set_person("ada@corp.test", {**sso.people["ada@corp.test"], "groups": []})
    assert signed_in_home(sso.http_sign_in("ada@corp.test"))
    assert Membership.objects.get(user__email="ada@corp.test").role == "member"


def test_a_rotated_signing_key_is_fetched_and_trusted(sso: SSO) -> None:
    assert signed_in_home(sso.http_sign_in("ada@corp.test"))  # the first JWKS is cached
    sso.idp.alter_next_token("rotated")

    assert signed_in_home(sso.http_sign_in("ada@corp.test"))
    assert sso.idp.issued()[-1]["sub"] == "ada@corp.test"


# --- Refusals: each one writes no account, membership, link or group membership -----------


def refused(result: Any) -> bool:
    response = result.response
    return response.status_code == 403 and "You are not signed in" in response.text


@pytest.mark.parametrize(("mode", "expected"), [
    ("forged", "bad_signature"), ("audience", "'aud'"), ("expired", "expired_token"),
])
def test_a_bad_id_token_is_refused_with_nothing_created(sso: SSO, mode: str,
                                                        expected: str) -> None:
    Group.objects.create(organization=sso.organization, name="Engineering",
                         claim_value="engineering")
    sso.idp.alter_next_token(mode)

    result = sso.http_sign_in("ada@corp.test")

    assert refused(result), result.response.text[:400]
    assert "could not be trusted" in result.response.text
    assert counts() == {"users": 0, "memberships": 0, "identities": 0, "group_memberships": 0}
    # The provider did send a token (the refusal is ours, not a failed exchange).
    assert len(sso.idp.issued()) == 1
    failure = AuditEntry.objects.get(action="auth.sign_in_failed")
    assert failure.outcome == "refused" and failure.details["method"] == "oidc"
    assert expected in failure.details["reason"]
    # Nobody is signed in on that browser.
    assert result.session.get(f"{sso.site}/", allow_redirects=False, timeout=10).status_code == 302


def test_a_replayed_state_is_refused(sso: SSO) -> None:
    first = sso.http_sign_in("ada@corp.test")
    assert signed_in_home(first)
    before = counts()

    again = first.session.get(first.callback, allow_redirects=False, timeout=10)

    assert again.status_code == 403 and "could not be trusted" in again.text
    assert counts() == before
    failure = AuditEntry.objects.get(action="auth.sign_in_failed")
    assert "mismatching_state" in failure.details["reason"]


def test_a_state_from_another_browser_is_refused_with_nothing_created(sso: SSO) -> None:
    import requests

    pending = sso.http_sign_in("ada@corp.test", follow_callback=False)

    stranger = requests.Session()
    response = stranger.get(pending.callback, allow_redirects=False, timeout=10)

    assert response.status_code == 403
    assert counts() == {"users": 0, "memberships": 0, "identities": 0, "group_memberships": 0}


def test_an_unverified_address_is_refused_with_nothing_created(sso: SSO) -> None:
    result = sso.http_sign_in("una@corp.test")

    assert refused(result) and "has not verified una@corp.test" in result.response.text
    assert counts() == {"users": 0, "memberships": 0, "identities": 0, "group_memberships": 0}


def test_an_address_outside_the_orgs_domains_is_refused(sso: SSO) -> None:
    result = sso.http_sign_in("mal@elsewhere.test")

    assert refused(result) and "is not at one of Corp" in result.response.text
    assert counts()["users"] == 0


def test_a_cancelled_sign_in_at_the_provider_says_so(sso: SSO) -> None:
    import requests

    response = requests.get(
        f"{sso.site}/accounts/sso/{sso.identity_provider.pk}/callback/?error=access_denied"
        "&error_description=The+user+cancelled", allow_redirects=False, timeout=10)
    assert response.status_code == 403 and "did not sign you in" in response.text
    assert counts()["users"] == 0


def test_sign_out_ends_the_session_and_sends_the_browser_to_the_providers_end_session(
        sso: SSO) -> None:
    result = sso.http_sign_in("ada@corp.test")
    session = result.session
    session.get(f"{sso.site}/", timeout=10)
    csrf = session.cookies.get("csrftoken")

    response = session.post(f"{sso.site}/accounts/logout/", data={"csrfmiddlewaretoken": csrf},
                            headers={"Referer": f"{sso.site}/"}, allow_redirects=False,
                            timeout=10)

    assert response.status_code == 200, response.text[:300]
    end_session = re.search(r'content="0;url=([^"]+)"', response.text)
    assert end_session is not None
    url = unescape(end_session.group(1))
    assert url.startswith(f"{sso.idp.issuer}/session/end")
    query = query_of(url)
    assert query["id_token_hint"] and query["client_id"] == "teamchat-test"
    assert query["post_logout_redirect_uri"] == f"{sso.site}/accounts/login/"
    # Signed out here already.
    assert session.get(f"{sso.site}/", allow_redirects=False, timeout=10).status_code == 302


def test_a_groups_overage_leaves_the_persons_groups_as_they_were(sso: SSO) -> None:
    engineering = Group.objects.create(organization=sso.organization, name="Engineering",
                                       claim_value="engineering")
    assert signed_in_home(sso.http_sign_in("ada@corp.test"))
    claims = {key: value for key, value in sso.people["ada@corp.test"].items() if key != "groups"}
    sso.idp.set_person("ada@corp.test", {**claims, "_claim_names": {"groups": "src1"},
                                         "_claim_sources": {"src1": {"endpoint": "https://x"}}})

    assert signed_in_home(sso.http_sign_in("ada@corp.test"))

    assert list(GroupMembership.objects.values_list("group", flat=True)) == [engineering.pk]
