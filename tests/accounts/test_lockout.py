"""Sign-in protection (django-axes): per account and per client, the admin login too."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

from accounts.models import User

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

RIGHT = "correct horse battery staple"  # tests/conftest.make_user's password


@pytest.fixture(autouse=True)
def fast_hashing(settings: Any) -> None:
    """Hundreds of sign-in attempts: a cheap hasher first, before the cast is created."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher",
                                 "django.contrib.auth.hashers.PBKDF2PasswordHasher"]


def _sign_in(email: str, password: str, *, ip: str = "203.0.113.7", path: str = "/accounts/login/",
             **headers: Any) -> Any:
    return Client(REMOTE_ADDR=ip, **headers).post(path, {"username": email, "password": password})


def _signed_in(response: Any) -> bool:
    return response.status_code == 302 and "/accounts/login/" not in response["Location"]


def test_ten_failures_for_one_account_lock_it_even_with_the_right_password(alice: User) -> None:
    # From ten different addresses: the account's own count locks it, and the tenth
    # failure already answers with the lockout page.
    statuses = [_sign_in("alice@example.com", "wrong", ip=f"198.51.100.{n}").status_code
                for n in range(10)]
    assert statuses == [200] * 9 + [429]
    refused = _sign_in("Alice@Example.com", RIGHT, ip="192.0.2.200")
    assert refused.status_code == 429
    assert "Sign-in paused" in refused.content.decode()
    assert "15 minutes" in refused.content.decode()
    assert refused["Retry-After"] == "900"


def test_nine_failures_do_not_lock_the_account(alice: User) -> None:
    for _ in range(9):
        _sign_in("alice@example.com", "wrong")
    assert _signed_in(_sign_in("alice@example.com", RIGHT))


def test_fifty_failures_from_one_client_lock_that_client_for_every_account(
    alice: User, bob: User
) -> None:
    for n in range(50):
        _sign_in(f"guess{n}@example.com", "wrong", ip="203.0.113.50")
    refused = _sign_in("bob@example.com", RIGHT, ip="203.0.113.50")
    assert refused.status_code == 429
    # Another client is not affected, nor are the guessed-at accounts' real owners elsewhere.
    assert _signed_in(_sign_in("bob@example.com", RIGHT, ip="203.0.113.51"))


def test_forty_nine_failures_from_one_client_do_not_lock_it(alice: User) -> None:
    for n in range(49):
        _sign_in(f"guess{n}@example.com", "wrong", ip="203.0.113.60")
    assert _signed_in(_sign_in("alice@example.com", RIGHT, ip="203.0.113.60"))


def test_a_forged_x_forwarded_for_does_not_make_a_new_client(alice: User) -> None:
    for n in range(50):
        _sign_in(f"guess{n}@example.com", "wrong", ip="203.0.113.70",
                 HTTP_X_FORWARDED_FOR=f"10.0.{n}.1")
    refused = _sign_in("alice@example.com", RIGHT, ip="203.0.113.70",
                       HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert refused.status_code == 429


def test_the_admin_login_is_covered_too(alice: User) -> None:
    alice.is_staff = True
    alice.save(update_fields=["is_staff"])
    for _ in range(10):
        _sign_in("alice@example.com", "wrong", path="/admin/login/")
    refused = _sign_in("alice@example.com", RIGHT, path="/admin/login/")
    assert refused.status_code == 429
    assert _sign_in("alice@example.com", RIGHT).status_code == 429


def test_the_lock_lifts_after_fifteen_minutes(alice: User) -> None:
    for _ in range(10):
        _sign_in("alice@example.com", "wrong")
    assert _sign_in("alice@example.com", RIGHT).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - dt.timedelta(minutes=16))
    assert _signed_in(_sign_in("alice@example.com", RIGHT))


def test_failures_older_than_fifteen_minutes_do_not_count(alice: User) -> None:
    for _ in range(9):
        _sign_in("alice@example.com", "wrong")
    AccessAttempt.objects.update(attempt_time=timezone.now() - dt.timedelta(minutes=16))
    _sign_in("alice@example.com", "wrong")
    assert _signed_in(_sign_in("alice@example.com", RIGHT))


def test_the_login_page_links_to_password_reset(client: Client) -> None:
    page = client.get("/accounts/login/").content.decode()
    assert "Forgot password?" in page and "/accounts/password/reset/" in page


def test_password_reset_answers_the_same_for_unknown_addresses(
    client: Client, alice: User, mailoutbox: list[Any]
) -> None:
    known = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    unknown = client.post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"]
    assert [m.to for m in mailoutbox] == [["alice@example.com"]]


def test_password_resets_per_client_are_limited(client: Client, alice: User, settings: Any,
                                                mailoutbox: list[Any]) -> None:
    settings.PASSWORD_RESETS_PER_HOUR = 2
    for _ in range(2):
        client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    refused = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert refused.status_code == 429
    assert len(mailoutbox) == 2
