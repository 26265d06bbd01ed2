from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import Organization, User
from billing.models import Notification
from tests.accounts.factories import as_text

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]


@pytest.fixture
def inboxes(alice: User, bob: User, charlie: User, org_a: Organization) -> dict[str, Notification]:
    other = charlie.memberships.get().organization
    return {
        "alice_1": Notification.objects.create(user=alice, organization=org_a, text="Acme used 80%",
                                               link="/org/usage/"),
        "alice_2": Notification.objects.create(user=alice, organization=org_a, text="Bob asks",
                                               link="javascript:alert(1)"),
        "charlie": Notification.objects.create(user=charlie, organization=other, text="Other Corp news"),
    }


def _login(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def test_the_page_lists_only_my_notifications(
    client: Client, alice: User, inboxes: dict[str, Notification]
) -> None:
    html = as_text(_login(client, alice).get("/notifications/"))
    assert "<h1>Notifications</h1>" in html
    assert "Acme used 80%" in html and "Bob asks" in html
    assert "Other Corp news" not in html
    assert 'href="/org/usage/"' in html
    assert "javascript:" not in html  # only links inside the site are rendered


def test_alice_marks_one_read_then_all(
    client: Client, alice: User, inboxes: dict[str, Notification]
) -> None:
    _login(client, alice)
    response = client.post("/notifications/read/", {"notification": inboxes["alice_1"].pk})
    assert response.status_code == 302
    assert Notification.objects.filter(user=alice, read_at=None).count() == 1
    assert client.post("/notifications/read/", HTTP_ACCEPT="application/json").json() == {"ok": True}
    assert not Notification.objects.filter(user=alice, read_at=None).exists()
    assert Notification.objects.get(pk=inboxes["charlie"].pk).read_at is None


def test_charlie_cannot_mark_alices_notification_read(
    client: Client, charlie: User, inboxes: dict[str, Notification]
) -> None:
    _login(client, charlie)
    for value in [inboxes["alice_1"].pk, "garbage", "99999999"]:
        assert client.post("/notifications/read/", {"notification": value}).status_code == 404
    assert Notification.objects.get(pk=inboxes["alice_1"].pk).read_at is None
    assert "Acme used 80%" not in as_text(client.get("/notifications/"))


def test_bob_as_a_plain_member_has_a_notifications_page(client: Client, bob: User) -> None:
    response = _login(client, bob).get("/notifications/")
    assert response.status_code == 200
    assert "No notifications yet." in as_text(response)
