"""/org/audit/: the org's admins read, filter and download their own org's log; members
and other orgs get a 404 and never a row of it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts import audit
from accounts.audit_models import AuditAction, AuditEntry
from accounts.models import Membership, Organization, User

pytestmark = [pytest.mark.django_db]


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _org(user: User) -> Organization:
    return Membership.objects.get(user=user).organization


def _logged_by_the_fixture(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without the entries the cast makes by existing: joining (member.added) and the
    viewer's own sign-in (force_login signs in like a form does)."""
    return [row for row in rows if row["action"] != "member.added"
            and not (row["action"] == "auth.sign_in" and row["person"] == "alice@example.com")]


def _body(response: Any) -> str:
    assert response.streaming  # streamed to the client, never built up as one body
    # An async iterator (ASGI streams it); iterating drives it from this synchronous test.
    with pytest.warns(Warning, match="consume asynchronous iterators"):
        return b"".join(response).decode()


@pytest.fixture
def logged(alice: User, bob: User, charlie: User) -> dict[str, AuditEntry]:
    org_a, org_b = _org(alice), _org(charlie)
    now = timezone.now()
    return {
        "bob_in": audit.record(AuditAction.SIGN_IN, organization=org_a, actor=bob,
                               obj=bob),
        "bob_failed": audit.record(AuditAction.SIGN_IN_FAILED, organization=org_a,
                                   actor_email="bob@example.com", obj=bob,
                                   outcome="failure"),
        "alice_share": audit.record(AuditAction.SHARE_CREATED, organization=org_a,
                                    actor=alice),
        "old": AuditEntry.objects.create(action=AuditAction.SIGN_OUT, organization=org_a,
                                         actor=alice, actor_email=alice.email,
                                         at=now - dt.timedelta(days=40)),
        "charlie_in": audit.record(AuditAction.SIGN_IN, organization=org_b, actor=charlie,
                                   obj=charlie, project="Bravo"),
    }


def test_alice_sees_her_orgs_log_and_nothing_of_charlies(alice: User, logged: Any) -> None:
    response = _client(alice).get(f"/org/audit/?org={_org(alice).pk}")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<h1>Audit log</h1>' in page and ">Audit log</a>" in page
    total = AuditEntry.objects.filter(organization=_org(alice)).count()
    assert total == 7  # the fixture's four, alice and bob joining, alice signing in here
    assert f"{total} entries" in page
    assert "Sign-in failed" in page and "Share link created" in page
    assert "charlie@example.com" not in page and "Bravo" not in page


def test_the_org_navigation_links_to_the_audit_log(alice: User) -> None:
    page = _client(alice).get("/org/").content.decode()
    assert f'href="/org/audit/?org={_org(alice).pk}"' in page and ">Audit log</a>" in page


@pytest.mark.parametrize("query", ["", "?format=csv", "?format=json", "?action=auth.sign_in"])
def test_a_member_gets_a_404(bob: User, logged: Any, query: str) -> None:
    assert _client(bob).get(f"/org/audit/{query}").status_code == 404
    assert _client(bob).get(f"/org/audit/?org={_org(bob).pk}&{query[1:]}").status_code == 404


def test_signed_out_people_are_sent_to_sign_in(logged: Any) -> None:
    response = Client().get("/org/audit/?format=csv")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("fmt", ["", "csv", "json"])
def test_charlie_cannot_reach_alices_log_by_naming_her_org(
    alice: User, charlie: User, logged: Any, fmt: str
) -> None:
    query = f"?org={_org(alice).pk}" + (f"&format={fmt}" if fmt else "")
    assert _client(charlie).get(f"/org/audit/{query}").status_code == 404


def test_filter_tricks_never_reach_another_orgs_rows(
    alice: User, bob: User, charlie: User, logged: Any
) -> None:
    client = _client(charlie)
    own = _org(charlie).pk
    for params in (f"person={bob.pk}", f"person={alice.pk}&action=share.created",
                   "action=auth.sign_in_failed", f"org={own}&person={bob.pk}"):
        body = _body(client.get(f"/org/audit/?org={own}&{params}&format=json"))
        assert json.loads(body) == []
    everything = _body(client.get(f"/org/audit/?org={own}&format=json"))
    assert {row["action"] for row in json.loads(everything)} == {"auth.sign_in", "member.added"}
    assert "alice@" not in everything and "bob@" not in everything


def test_filters_by_action_person_and_dates(alice: User, bob: User, logged: Any) -> None:
    client = _client(alice)
    org = _org(alice).pk

    def rows(params: str) -> list[dict[str, Any]]:
        return json.loads(_body(client.get(f"/org/audit/?org={org}&{params}&format=json")))

    assert [r["person"] for r in rows("action=auth.sign_in")] == ["alice@example.com",
                                                                 "bob@example.com"]
    # By bob or about bob: his sign-in, the failed attempt at his account, his joining.
    assert sorted(r["action"] for r in rows(f"person={bob.pk}")) == [
        "auth.sign_in", "auth.sign_in_failed", "member.added"]
    today = timezone.now().date()
    recent = rows(f"from={today - dt.timedelta(days=1)}&to={today}")
    assert len(_logged_by_the_fixture(recent)) == 3
    assert "auth.sign_out" not in {r["action"] for r in recent}
    forty = (timezone.now() - dt.timedelta(days=40)).date()
    assert [r["action"] for r in rows(f"from={forty}&to={forty}")] == ["auth.sign_out"]

    page = client.get(f"/org/audit/?org={org}&action=auth.sign_in_failed").content.decode()
    assert "1 entry." in page and 'value="auth.sign_in_failed" selected' in page
    assert f'href="/org/audit/?org={org}&amp;action=auth.sign_in_failed&amp;format=csv"' in page


@pytest.mark.parametrize("params, error", [
    ("from=yesterday", "is not a date"),
    ("action=auth.guessed", "Choose an action"),
    ("person=bob", "Choose a person"),
    ("from=2026-12-02&to=2026-12-01", "swap the dates"),
])
def test_a_bad_filter_says_how_to_fix_it(alice: User, logged: Any, params: str,
                                         error: str) -> None:
    response = _client(alice).get(f"/org/audit/?{params}")
    assert response.status_code == 400 and error in response.content.decode()
    download = _client(alice).get(f"/org/audit/?{params}&format=csv")
    assert download.status_code == 400 and error in download.content.decode()


def test_the_csv_download_has_the_filtered_rows(alice: User, logged: Any) -> None:
    response = _client(alice).get(f"/org/audit/?org={_org(alice).pk}&format=csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-org')
    assert response["Cache-Control"] == "private, no-store"
    table = _logged_by_the_fixture(list(csv.DictReader(io.StringIO(_body(response)))))
    assert [row["action"] for row in table] == ["share.created", "auth.sign_in_failed",
                                                "auth.sign_in", "auth.sign_out"]
    assert table[1]["person"] == "bob@example.com" and table[1]["outcome"] == "failure"
    assert set(table[0]) == set(audit.EXPORT_FIELDS)


def test_a_typed_address_cannot_become_a_spreadsheet_formula(alice: User) -> None:
    audit.record(AuditAction.SIGN_IN_FAILED, organization=_org(alice),
                 actor_email='=HYPERLINK("http://evil.test","x")', outcome="failure")
    body = _body(_client(alice).get(f"/org/audit/?org={_org(alice).pk}&format=csv"))
    [row] = _logged_by_the_fixture(list(csv.DictReader(io.StringIO(body))))
    assert row["person"] == '\'=HYPERLINK("http://evil.test","x")'


def test_a_large_log_streams_in_batches(alice: User, monkeypatch: Any) -> None:
    monkeypatch.setattr(audit, "EXPORT_BATCH", 7)
    org = _org(alice)
    at = timezone.now()
    AuditEntry.objects.bulk_create([
        AuditEntry(action=AuditAction.SIGN_IN, organization=org, actor=alice,
                   actor_email=alice.email, at=at - dt.timedelta(seconds=n % 5))
        for n in range(50)])
    response = _client(alice).get(f"/org/audit/?org={org.pk}&format=json")
    with pytest.warns(Warning, match="consume asynchronous iterators"):
        chunks = list(response)
    rows = json.loads(b"".join(chunks))
    assert len(rows) == AuditEntry.objects.filter(organization=org).count()
    assert len(chunks) > 50  # a chunk per row, fetched 7 at a time
    stamps = [row["at"] for row in rows]
    assert stamps == sorted(stamps, reverse=True)


def test_the_page_is_paginated(alice: User) -> None:
    org = _org(alice)
    AuditEntry.objects.bulk_create([
        AuditEntry(action=AuditAction.SIGN_IN, organization=org, actor_email=alice.email)
        for _ in range(audit.PAGE_SIZE + 5)])
    client = _client(alice)
    first = client.get(f"/org/audit/?org={org.pk}").content.decode()
    assert "Page 1 of 2" in first and "page=2" in first
    second = client.get(f"/org/audit/?org={org.pk}&page=2").content.decode()
    total = AuditEntry.objects.filter(organization=org).count()
    assert second.count("<tr>") - 1 == total - audit.PAGE_SIZE  # the head row, then entries
