"""Bad input of every kind gets a clear answer, never a 500.

Every form and JSON endpoint, signed in as the person who may use it, gets each hostile
value in each of its fields (odd Unicode digits, huge numbers, newlines, NUL, wrong
shapes, megabytes of text); the answer is a 2xx/3xx page or a 4xx, and the database is not
left half-changed (invitations, memberships and orgs are counted before and after).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from accounts.models import AllowedEmailDomain, Invitation, Membership, Organization, User
from billing.models import BudgetRequest

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

HOSTILE = [
    "²", "٣", "𝟘𝟙", "½", "1e999999", "9" * 5000, "-1", "-0", "NaN", "Infinity", "-Infinity",
    "0x10", "1_000", "1,5", " 12 ", "\r\nBcc: victim@example.com", "a\x00b", "\x00",
    "\u202e\u2028\u0085", "' OR 1=1 --", "<script>alert(1)</script>", "0000-01", "2026-13",
    "9999999999-01", "٢٠٢٦-٠١", "x" * 100_000, "", " ",
]


def _snapshot() -> tuple[int, ...]:
    return (User.objects.count(), Organization.objects.count(), Membership.objects.count(),
            Invitation.objects.count(), AllowedEmailDomain.objects.count())


def _allowed(status: int) -> bool:
    return status < 500


@pytest.fixture
def cast(alice: User, bob: User, charlie: User, org_a: Organization) -> dict[str, Any]:
    bob_membership = Membership.objects.get(user=bob)
    request = BudgetRequest.objects.create(membership=bob_membership, note="more please")
    return {"bob_membership": bob_membership.pk, "request": request.pk, "org": org_a.pk}


# (method, path, fields with a valid value) for every form or JSON endpoint; the path's
# {names} are the cast's ids. One test each, so pytest-xdist spreads them.
ENDPOINTS = [
    ("post", "/org/invitations/", {"email": "dana@example.com", "role": "member"}),
    ("post", "/org/allowed-domains/", {"domains": "example.com"}),
    ("post", "/org/zero-data-retention/", {"zero_data_retention": "on"}),
    ("post", "/org/retention/", {"retention_days": "30", "delete_shares": "on"}),
    ("post", "/org/members/{bob_membership}/role/", {"role": "member"}),
    ("post", "/org/members/{bob_membership}/budget/", {"monthly_budget_usd": "5"}),
    ("post", "/org/budgets/", {"monthly_budget_usd": "50", "member_budget_usd": "5"}),
    ("post", "/org/budget-request/", {"note": "more", "organization": "{org}"}),
    ("post", "/org/budget-requests/{request}/approve/", {"new_budget_usd": "9"}),
    ("get", "/org/usage/", {"period": "2026-11"}),
    ("get", "/org/usage.csv", {"period": "2026-11"}),
    ("get", "/org/estimates/", {"profile": "o3-mini", "prompt_tokens": "100"}),
    ("get", "/org/", {"org": "{org}"}),
    ("get", "/budget/", {"conversation": "1"}),
    ("post", "/notifications/read/", {"notification": "1"}),
    ("post", "/accounts/switch-org/", {"organization": "{org}"}),
    ("post", "/shared/policy/", {"policy": "org"}),
]


def _hit(client: Client, method: str, path: str, data: dict[str, str]) -> int:
    call: Callable[..., Any] = getattr(client, method)
    return call(path, data, HTTP_ACCEPT="text/html").status_code


@pytest.mark.parametrize(("method", "template", "fields"), ENDPOINTS,
                         ids=[f"{method} {path}" for method, path, _ in ENDPOINTS])
def test_every_signed_in_form_and_json_endpoint_answers_bad_input_without_a_500(
    cast: dict[str, Any], alice: User, method: str, template: str, fields: dict[str, str]
) -> None:
    path = template.format(**cast)
    valid = {name: value.format(**cast) for name, value in fields.items()}
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    before = _snapshot()
    failures = []
    for field in valid:
        for value in HOSTILE:
            status = _hit(client, method, path, {**valid, field: value})
            if not _allowed(status):
                failures.append(f"{method.upper()} {path} {field}={value[:30]!r} → {status}")
        # Wrong shapes: a list where one value is expected, and the field missing.
        client_data = {**valid}
        client_data.pop(field)
        for data in (client_data, {**valid, field: ["1", "2"]}):
            status = _hit(client, method, path, data)  # type: ignore[arg-type]
            if not _allowed(status):
                failures.append(f"{method.upper()} {path} {field} shape → {status}")
    assert failures == [], "\n".join(failures)
    assert _snapshot()[:3] == before[:3]  # no person, org or membership made or lost


def test_anonymous_forms_answer_bad_input_without_a_500_and_create_nothing(alice: User) -> None:
    before = _snapshot()
    failures: list[str] = []
    forms = [
        ("/accounts/signup/", {"email": "x@example.org", "password": "long pass 123 abc",
                               "organization": "X"}),
        ("/accounts/login/", {"username": "alice@example.com", "password": "wrong"}),
        ("/accounts/password/reset/", {"email": "alice@example.com"}),
        ("/invite/not-a-token/", {"password": "long pass 123 abc"}),
        ("/accounts/signup/finish/not-a-token/", {"password": "long pass 123 abc"}),
        ("/s/not-a-token/continue/", {"organization": "1"}),
    ]
    for path, valid in forms:
        for field in valid:
            for value in HOSTILE:
                client = Client(raise_request_exception=False, REMOTE_ADDR=f"10.1.{len(failures)}.1")
                status = client.post(path, {**valid, field: value}).status_code
                if not _allowed(status):
                    failures.append(f"POST {path} {field}={value[:30]!r} → {status}")
    for token in HOSTILE[:-2]:
        for path in (f"/invite/{token}/", f"/s/{token}/", f"/accounts/signup/finish/{token}/",
                     f"/accounts/verify-email/{token}/"):
            status = Client(raise_request_exception=False).get(path.replace("\x00", "%00")).status_code
            if not _allowed(status):
                failures.append(f"GET {path[:40]!r} → {status}")
            if path.startswith("/accounts/verify-email/"):
                status = Client(raise_request_exception=False).post(
                    path.replace("\x00", "%00")).status_code
                if not _allowed(status):
                    failures.append(f"POST {path[:40]!r} → {status}")
    assert failures == [], "\n".join(failures)
    # The first account exists, so nothing a stranger posts creates an account or an org.
    assert _snapshot()[:3] == before[:3]
