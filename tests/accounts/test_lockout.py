"""Sign-in protection (django-axes): per account and per client, the admin login too."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.db.models import F
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


def test_ten_failures_from_one_client_pause_that_client_for_that_account_only(
    alice: User,
) -> None:
    # The tenth failure already answers with the pause page; the right password is refused
    # from that client, and alice signs in from her own.
    statuses = [_sign_in("alice@example.com", "wrong", ip="198.51.100.1").status_code
                for _ in range(10)]
    assert statuses == [200] * 9 + [429]
    refused = _sign_in("Alice@Example.com", RIGHT, ip="198.51.100.1")
    assert refused.status_code == 429
    page = refused.content.decode()
    assert "Sign-in paused" in page
    assert "Try again in 15 minutes" in page
    assert "Forgot password?" in page and "sign in at once, from anywhere" in page
    assert refused["Retry-After"] == "900"
    assert _signed_in(_sign_in("alice@example.com", RIGHT, ip="192.0.2.200"))


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


def _failures(username: str) -> int:
    return sum(AccessAttempt.objects.filter(username=username)
               .values_list("failures_since_start", flat=True))


def _reset_password(email: str, new_password: str, mailoutbox: list[Any], *,
                    ip: str = "192.0.2.90") -> None:
    """Ask for a reset link and follow it from the mail, as the owner does."""
    browser = Client(REMOTE_ADDR=ip)
    assert browser.post("/accounts/password/reset/", {"email": email}).status_code == 302
    link = re.search(r"/accounts/password/reset/[^/\s]+/[^/\s]+/", mailoutbox[-1].body)
    assert link is not None
    form_url = browser.get(link[0])["Location"]  # Django moves the token into the session
    done = browser.post(form_url, {"new_password1": new_password, "new_password2": new_password})
    assert done.status_code == 302 and done["Location"] == "/accounts/password/reset/done/"


def test_an_attacker_on_one_client_cannot_keep_alice_out_of_her_own(alice: User) -> None:
    attacker = [_sign_in("alice@example.com", "wrong", ip="203.0.113.66").status_code
                for _ in range(40)]
    assert attacker.count(200) == 9 and attacker.count(429) == 31
    assert _signed_in(_sign_in("alice@example.com", RIGHT, ip="192.0.2.10"))


def test_guessing_from_many_clients_pauses_new_devices_but_not_alices_own(
    alice: User, settings: Any
) -> None:
    own = Client(REMOTE_ADDR="192.0.2.10")
    assert _signed_in(own.post("/accounts/login/", {"username": "alice@example.com",
                                                    "password": RIGHT}))
    own.post("/accounts/logout/")
    for n in range(settings.LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS):
        _sign_in("alice@example.com", "wrong", ip=f"198.51.100.{n + 1}")

    new_device = _sign_in("alice@example.com", RIGHT, ip="192.0.2.11")
    assert new_device.status_code == 429
    page = new_device.content.decode()
    assert "devices that have not signed in to it before" in page
    assert "Try again in 15 minutes" in page and "Forgot password?" in page
    # Her own browser signs in, even from another network (the cookie, not the address).
    own.defaults["REMOTE_ADDR"] = "192.0.2.12"
    assert _signed_in(own.post("/accounts/login/", {"username": "alice@example.com",
                                                    "password": RIGHT}))


def test_a_known_device_cookie_for_another_account_or_forged_does_not_count(
    alice: User, bob: User, settings: Any
) -> None:
    bobs = Client(REMOTE_ADDR="192.0.2.20")
    assert _signed_in(bobs.post("/accounts/login/", {"username": "bob@example.com",
                                                     "password": RIGHT}))
    bobs.post("/accounts/logout/")
    for n in range(settings.LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS):
        _sign_in("alice@example.com", "wrong", ip=f"198.51.100.{n + 1}")
    assert bobs.post("/accounts/login/", {"username": "alice@example.com",
                                          "password": RIGHT}).status_code == 429
    forged = Client(REMOTE_ADDR="192.0.2.21")
    forged.cookies["known_device"] = bobs.cookies["known_device"].value.replace("a", "b", 1)
    assert forged.post("/accounts/login/", {"username": "alice@example.com",
                                            "password": RIGHT}).status_code == 429


def test_nineteen_failures_from_many_clients_do_not_pause_new_devices(
    alice: User, settings: Any
) -> None:
    for n in range(settings.LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS - 1):
        _sign_in("alice@example.com", "wrong", ip=f"198.51.100.{n + 1}")
    assert _signed_in(_sign_in("alice@example.com", RIGHT, ip="192.0.2.11"))


def test_attempts_while_paused_neither_count_nor_extend_the_pause(alice: User) -> None:
    for _ in range(10):
        _sign_in("alice@example.com", "wrong")
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - dt.timedelta(minutes=14))
    paused_at = list(AccessAttempt.objects.order_by("pk").values_list("attempt_time", flat=True))
    # One more guess every few minutes used to keep the account locked for good.
    for password in ["wrong", "wrong", RIGHT, "wrong"]:
        refused = _sign_in("alice@example.com", password)
        assert refused.status_code == 429
        assert 0 < int(refused["Retry-After"]) <= 60
    assert _failures("alice@example.com") == 10
    assert list(AccessAttempt.objects.order_by("pk").values_list("attempt_time", flat=True)) == paused_at
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - dt.timedelta(minutes=2))
    assert _signed_in(_sign_in("alice@example.com", RIGHT))


def test_a_completed_password_reset_lets_alice_sign_in_at_once_from_anywhere(
    alice: User, settings: Any, mailoutbox: list[Any]
) -> None:
    for _ in range(10):
        _sign_in("alice@example.com", "wrong", ip="203.0.113.66")
    for n in range(settings.LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS):
        _sign_in("alice@example.com", "wrong", ip=f"198.51.100.{n + 1}")
    assert _sign_in("alice@example.com", RIGHT, ip="192.0.2.30").status_code == 429

    _reset_password("alice@example.com", "a fresh pass phrase 77", mailoutbox)

    assert _failures("alice@example.com") == 0
    assert _signed_in(_sign_in("alice@example.com", "a fresh pass phrase 77", ip="192.0.2.30"))
    assert _signed_in(_sign_in("alice@example.com", "a fresh pass phrase 77", ip="203.0.113.66"))


def test_a_password_reset_keeps_other_accounts_failures(alice: User, bob: User,
                                                        mailoutbox: list[Any]) -> None:
    for _ in range(10):
        _sign_in("bob@example.com", "wrong", ip="203.0.113.66")
    _reset_password("alice@example.com", "a fresh pass phrase 77", mailoutbox)
    assert _failures("bob@example.com") == 10
    assert _sign_in("bob@example.com", RIGHT, ip="203.0.113.66").status_code == 429


def test_one_client_cannot_pause_several_accounts_for_everyone(
    alice: User, bob: User, charlie: User
) -> None:
    for email in ["alice@example.com", "bob@example.com", "charlie@example.com"]:
        for _ in range(10):
            _sign_in(email, "wrong", ip="203.0.113.80")
    for email in ["alice@example.com", "bob@example.com", "charlie@example.com"]:
        assert _sign_in(email, RIGHT, ip="203.0.113.80").status_code == 429
        assert _signed_in(_sign_in(email, RIGHT, ip="192.0.2.40"))


def test_the_pause_page_of_a_spraying_client_offers_only_waiting(alice: User) -> None:
    for n in range(50):
        _sign_in(f"guess{n}@example.com", "wrong", ip="203.0.113.50")
    page = _sign_in("alice@example.com", RIGHT, ip="203.0.113.50").content.decode()
    assert "from this network, for several accounts" in page
    assert "Try again in 15 minutes" in page and "Forgot password?" not in page


def test_reset_mails_per_address_are_capped_without_saying_so(
    alice: User, bob: User, mailoutbox: list[Any]
) -> None:
    answers = [Client(REMOTE_ADDR=f"198.51.100.{n + 1}").post(
        "/accounts/password/reset/", {"email": "Alice@example.com"}) for n in range(6)]
    assert {(a.status_code, a["Location"]) for a in answers} == {
        (302, "/accounts/password/reset/sent/")}
    assert [m.to for m in mailoutbox] == [["alice@example.com"]] * 3
    Client(REMOTE_ADDR="198.51.100.99").post("/accounts/password/reset/",
                                             {"email": "bob@example.com"})
    assert mailoutbox[-1].to == ["bob@example.com"]
