"""Every emailed link is built on SITE_URL. A Host header the client forges (another port
passes ALLOWED_HOSTS, which ignores ports; a wildcard ALLOWED_HOSTS passes any host) must
not send a victim's reset, invitation or sign-up token to the forger's server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from accounts.models import User
from billing.alerts import notify

pytestmark = pytest.mark.django_db

SITE = "https://chat.example.com"
FORGED_HOSTS = ["testserver:4444", "evil.example"]


@pytest.fixture(autouse=True)
def configured_site(settings: Any) -> None:
    settings.SITE_URL = SITE
    settings.ALLOWED_HOSTS = ["testserver", "evil.example"]


def links_in(body: str) -> list[str]:
    return re.findall(r"https?://\S+", body)


def assert_every_link_is_on_the_site(body: str) -> None:
    links = links_in(body)
    assert links, body
    for link in links:
        assert link.startswith(SITE + "/"), link
        assert "4444" not in link and "evil" not in link, link


@pytest.mark.parametrize("host", FORGED_HOSTS)
def test_a_password_reset_link_ignores_a_forged_host(alice: User, host: str) -> None:
    response = Client(HTTP_HOST=host).post("/accounts/password/reset/", {"email": alice.email})
    assert response.status_code == 302
    [message] = mail.outbox
    assert_every_link_is_on_the_site(str(message.body))
    assert f"{SITE}/accounts/password/reset/" in message.body


@pytest.mark.parametrize("host", FORGED_HOSTS)
def test_an_invitation_link_ignores_a_forged_host(alice: User, host: str) -> None:
    client = Client(HTTP_HOST=host)
    client.force_login(alice)
    response = client.post("/org/invitations/", {"email": "dana@example.com", "role": "member"})
    assert response.status_code == 302
    [message] = mail.outbox
    assert_every_link_is_on_the_site(str(message.body))
    assert f"{SITE}/invite/" in message.body
    # The link the admin copies from the page is the same one.
    page = client.get("/org/").content.decode()
    assert f'value="{SITE}/invite/' in page


@pytest.mark.parametrize("host", FORGED_HOSTS)
def test_a_sign_up_link_ignores_a_forged_host(alice: User, settings: Any, host: str) -> None:
    settings.SIGNUP = "open"
    response = Client(HTTP_HOST=host).post("/accounts/signup/", {"email": "erin@example.net"})
    assert response.status_code == 200
    [message] = mail.outbox
    assert_every_link_is_on_the_site(str(message.body))
    assert f"{SITE}/accounts/signup/finish/" in message.body


def test_the_already_registered_mail_links_to_the_site(alice: User, settings: Any) -> None:
    settings.SIGNUP = "open"
    Client(HTTP_HOST="evil.example").post("/accounts/signup/", {"email": alice.email})
    [message] = mail.outbox
    assert_every_link_is_on_the_site(str(message.body))


def test_a_verification_link_ignores_a_forged_host(alice: User) -> None:
    client = Client(HTTP_HOST="evil.example")
    client.force_login(alice)
    client.post("/accounts/verify-email/")
    [message] = mail.outbox
    assert_every_link_is_on_the_site(str(message.body))
    assert f"{SITE}/accounts/verify-email/" in message.body


def test_a_budget_notification_links_to_the_page_on_the_site(alice: User) -> None:
    organization = alice.memberships.get().organization
    notify(organization_id=organization.pk, user_ids=[alice.pk],
           text="The organization has used 80% of its budget.", link="/org/usage/")
    [message] = mail.outbox
    assert links_in(str(message.body)) == [f"{SITE}/org/usage/"]
