"""The org audit log: what is recorded, and that nobody in the product can change it.

alice owns org A, bob is a member of org A, charlie owns org B (tests/conftest.py).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone

from accounts import audit, members
from accounts.audit_models import AuditAction, AuditEntry, AuditLogImmutable
from accounts.models import Membership, Organization, User
from accounts.tasks import prune_audit_log
from llm.models import ModelProfile

pytestmark = [pytest.mark.django_db]

RIGHT = "correct horse battery staple"  # tests/conftest.make_user's password


def _sign_in(email: str, password: str, *, ip: str = "203.0.113.7") -> Any:
    return Client(REMOTE_ADDR=ip).post("/accounts/login/",
                                       {"username": email, "password": password})


def _entries(action: str, **filters: Any) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action, **filters).order_by("id"))


def _org_ids(entries: list[AuditEntry]) -> list[int]:
    """The orgs whose logs hold these entries, sorted; each of them names one."""
    ids = []
    for entry in entries:
        assert entry.organization_id is not None
        ids.append(entry.organization_id)
    return sorted(ids)


def _membership(user: User) -> Membership:
    return Membership.objects.select_related("organization").get(user=user)


def _postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's")


# --- Sign-in events -------------------------------------------------------------------------


def test_a_sign_in_is_recorded_in_the_persons_org_with_their_client_address(
    bob: User, org_a: Organization
) -> None:
    response = _sign_in("bob@example.com", RIGHT, ip="203.0.113.5")
    assert response.status_code == 302
    [entry] = _entries(AuditAction.SIGN_IN)
    assert (entry.organization_id, entry.actor_id, entry.actor_email) == (org_a.pk, bob.pk,
                                                                          "bob@example.com")
    assert (entry.client_ip, entry.outcome) == ("203.0.113.5", "success")
    assert (entry.object_type, entry.object_id) == ("accounts.user", str(bob.pk))


def test_a_sign_in_of_someone_in_two_orgs_is_in_both_logs(bob: User, charlie: User) -> None:
    Membership.objects.create(user=bob, organization=_membership(charlie).organization)
    _sign_in("bob@example.com", RIGHT)
    assert _org_ids(_entries(AuditAction.SIGN_IN)) == sorted(
        bob.memberships.values_list("organization_id", flat=True))


def test_a_wrong_password_is_a_failure_naming_the_account_but_never_the_guess(
    bob: User, org_a: Organization
) -> None:
    assert _sign_in("Bob@Example.com", "my secret guess", ip="198.51.100.9").status_code == 200
    [entry] = _entries(AuditAction.SIGN_IN_FAILED)
    assert entry.organization_id == org_a.pk and entry.actor_id is None
    assert entry.actor_email == "bob@example.com" and entry.outcome == "failure"
    assert (entry.object_type, entry.object_id, entry.client_ip) == (
        "accounts.user", str(bob.pk), "198.51.100.9")
    assert "my secret guess" not in json.dumps(entry.details)
    assert not AuditEntry.objects.filter(details__icontains="guess").exists()


def test_a_failure_for_an_unknown_address_belongs_to_no_org(alice: User) -> None:
    _sign_in("nobody@example.com", "whatever")
    [entry] = _entries(AuditAction.SIGN_IN_FAILED)
    assert entry.organization_id is None and entry.actor_email == "nobody@example.com"
    assert entry.object_type == ""


def test_the_pause_is_recorded_once_and_each_refused_attempt_too(
    bob: User, org_a: Organization, settings: Any
) -> None:
    for _ in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        _sign_in("bob@example.com", "wrong", ip="198.51.100.20")
    assert len(_entries(AuditAction.SIGN_IN_FAILED)) == settings.LOGIN_FAILURES_PER_ACCOUNT
    [paused] = _entries(AuditAction.LOCKED_OUT)
    assert paused.outcome == "refused" and paused.organization_id == org_a.pk
    assert paused.details == {"attempt": "started the pause",
                              "failures": settings.AXES_FAILURE_LIMIT}

    # The right password while paused: refused, recorded as such, not as a wrong password.
    assert _sign_in("bob@example.com", RIGHT, ip="198.51.100.20").status_code == 429
    assert len(_entries(AuditAction.SIGN_IN_FAILED)) == settings.LOGIN_FAILURES_PER_ACCOUNT
    refused = _entries(AuditAction.LOCKED_OUT)[-1]
    assert refused.details == {"attempt": "refused during the pause"}
    assert refused.client_ip == "198.51.100.20" and not _entries(AuditAction.SIGN_IN)


def test_signing_out_is_recorded(bob: User, org_a: Organization) -> None:
    client = Client(REMOTE_ADDR="192.0.2.4")
    client.force_login(bob)
    client.post("/accounts/logout/")
    [entry] = _entries(AuditAction.SIGN_OUT)
    assert (entry.actor_id, entry.organization_id, entry.client_ip) == (bob.pk, org_a.pk,
                                                                        "192.0.2.4")


def test_a_password_changed_anywhere_is_recorded_without_it(bob: User, org_a: Organization
                                                            ) -> None:
    bob.set_password("a brand new passphrase 12")
    bob.save()
    [entry] = _entries(AuditAction.PASSWORD_CHANGED)
    assert entry.organization_id == org_a.pk and entry.object_id == str(bob.pk)
    assert entry.actor_id is None and entry.actor_email == ""  # the shell: nobody signed in
    assert "passphrase" not in json.dumps(entry.details)
    bob.save()  # a save without a new password is no change
    assert len(_entries(AuditAction.PASSWORD_CHANGED)) == 1


def test_a_reset_through_the_emailed_link_is_recorded_as_a_reset_by_the_person(
    bob: User, org_a: Organization, mailoutbox: list[Any]
) -> None:
    browser = Client(REMOTE_ADDR="192.0.2.90")
    browser.post("/accounts/password/reset/", {"email": "bob@example.com"})
    link = re.search(r"/accounts/password/reset/[^/\s]+/[^/\s]+/", mailoutbox[-1].body)
    assert link is not None
    form_url = browser.get(link[0])["Location"]
    new = "a fresh reset passphrase 55"
    browser.post(form_url, {"new_password1": new, "new_password2": new})
    [entry] = _entries(AuditAction.PASSWORD_RESET)
    assert (entry.actor_id, entry.organization_id, entry.client_ip) == (bob.pk, org_a.pk,
                                                                        "192.0.2.90")
    assert not _entries(AuditAction.PASSWORD_CHANGED)


# --- Model changes (django-auditlog) ------------------------------------------------------


def test_a_role_change_names_the_member_the_old_and_new_role_and_who_made_it(
    alice: User, bob: User, org_a: Organization
) -> None:
    client = Client(REMOTE_ADDR="192.0.2.33")
    client.force_login(alice)
    membership = _membership(bob)
    response = client.post(f"/org/members/{membership.pk}/role/?org={org_a.pk}",
                           {"role": "admin"})
    assert response.status_code == 302
    [entry] = _entries(AuditAction.ROLE_CHANGED)
    assert (entry.actor_id, entry.organization_id, entry.client_ip) == (alice.pk, org_a.pk,
                                                                        "192.0.2.33")
    assert (entry.object_type, entry.object_id) == ("accounts.membership", str(membership.pk))
    assert entry.details == {"member": "bob@example.com", "old": "member", "new": "admin"}


def test_budget_and_setting_changes_carry_old_and_new_values(
    alice: User, bob: User, org_a: Organization
) -> None:
    admin = _membership(alice)
    members.set_org_budgets(by=admin, monthly_budget_usd=Decimal("50.00"),
                            member_budget_usd=Decimal("5.00"))
    members.set_member_budget(by=admin, target=_membership(bob), amount=Decimal("7.50"))
    members.set_zero_data_retention(by=admin, enabled=True)
    org_budgets, member_budget = _entries(AuditAction.BUDGET_CHANGED)
    assert org_budgets.details == {"changes": {
        "monthly_budget_usd": {"old": None, "new": "50.00"},
        "member_budget_usd": {"old": None, "new": "5.00"}}}
    assert member_budget.details == {"member": "bob@example.com", "changes": {
        "monthly_budget_usd": {"old": None, "new": "7.50"}}}
    [setting] = _entries(AuditAction.ORG_SETTINGS_CHANGED)
    assert setting.details == {"changes": {"zero_data_retention": {"old": "False",
                                                                   "new": "True"}}}
    assert {e.organization_id for e in AuditEntry.objects.all()} == {org_a.pk}


def test_org_instructions_are_audited_by_length_only(alice: User, org_a: Organization) -> None:
    org_a.developer_message = "Never mention Project Falcon."
    org_a.save()
    [entry] = _entries(AuditAction.ORG_SETTINGS_CHANGED)
    assert entry.details == {"changes": {"developer_message": {
        "old": "", "new": "(29 characters)"}}}
    assert "Falcon" not in json.dumps(list(LogEntry.objects.values("changes")))


def test_a_model_profile_change_reaches_every_org_that_may_use_it(
    alice: User, charlie: User, o3_mini: ModelProfile
) -> None:
    o3_mini.input_price = Decimal("2.0000")
    o3_mini.endpoint = "https://user:hunter2@llm.example.com/v1"
    o3_mini.save()
    entries = _entries(AuditAction.MODEL_PROFILE_CHANGED)
    # Neither org has a list of its own, so both may use every active profile.
    assert _org_ids(entries) == sorted(
        Organization.objects.values_list("pk", flat=True))
    changes = entries[0].details["changes"]
    assert changes["input_price"]["new"] == "2.0000"
    assert changes["endpoint"] == {"old": "", "new": "https://user:***@llm.example.com/v1"}
    assert entries[0].details["operation"] == "changed"
    assert "hunter2" not in json.dumps([e.details for e in entries])
    assert "hunter2" not in json.dumps(list(LogEntry.objects.values("changes")))


def test_a_profile_used_by_no_org_is_audited_without_an_org(
    alice: User, o3_mini: ModelProfile
) -> None:
    other = ModelProfile.objects.create(
        name="spare", display_name="Spare", model="spare", context_window=1000,
        max_output_tokens=100, max_completion_tokens=100, input_price=1, cached_input_price=1,
        output_price=1)
    org = _membership(alice).organization
    org.enabled_profiles.set([o3_mini])
    other.display_name = "Spare model"
    other.save()
    [changed] = [e for e in _entries(AuditAction.MODEL_PROFILE_CHANGED)
                 if e.details["operation"] == "changed"]
    assert changed.organization_id is None


def test_enabling_models_is_an_org_setting_change(alice: User, o3_mini: ModelProfile) -> None:
    org = _membership(alice).organization
    org.enabled_profiles.add(o3_mini)
    org.enabled_profiles.remove(o3_mini)
    added, removed = _entries(AuditAction.ORG_SETTINGS_CHANGED)
    assert added.details == {"enabled_profiles": {"added": [o3_mini.name]}}
    assert removed.details == {"enabled_profiles": {"removed": [o3_mini.name]}}


# --- Append-only ---------------------------------------------------------------------------


def _an_entry(**fields: Any) -> AuditEntry:
    return audit.record(AuditAction.SIGN_IN, **fields)


def test_entries_cannot_be_changed_or_deleted_through_the_orm(alice: User) -> None:
    entry = _an_entry(actor=alice, organization=_membership(alice).organization)
    entry.outcome = "failure"
    with pytest.raises(AuditLogImmutable):
        entry.save()
    with pytest.raises(AuditLogImmutable):
        entry.delete()
    with pytest.raises(AuditLogImmutable):
        AuditEntry.objects.filter(pk=entry.pk).update(outcome="failure")
    with pytest.raises(AuditLogImmutable):
        AuditEntry.objects.filter(pk=entry.pk).delete()
    assert AuditEntry.objects.get(pk=entry.pk).outcome == "success"


@pytest.mark.parametrize("statement", [
    "UPDATE accounts_auditentry SET outcome = 'failure'",
    "UPDATE accounts_auditentry SET actor_email = 'someone@else.test'",
    "UPDATE accounts_auditentry SET actor_id = NULL, action = 'auth.sign_out'",
    "DELETE FROM accounts_auditentry",
])
def test_the_database_refuses_changes_and_deletes_from_any_code(alice: User, statement: str
                                                                ) -> None:
    _postgres()
    entry = _an_entry(actor=alice)
    with pytest.raises(DatabaseError, match="cannot be"), transaction.atomic(), \
            connection.cursor() as cursor:
        cursor.execute(statement)
    assert AuditEntry.objects.filter(pk=entry.pk, outcome="success",
                                     actor_id=alice.pk).exists()


def test_deleting_a_person_keeps_their_entries_with_their_address(
    alice: User, bob: User, org_a: Organization
) -> None:
    _sign_in("bob@example.com", RIGHT)
    membership_id = _membership(bob).pk
    bob.delete()
    [entry] = _entries(AuditAction.SIGN_IN)
    assert entry.actor_id is None and entry.actor_email == "bob@example.com"
    [removed] = _entries(AuditAction.MEMBER_REMOVED)
    assert removed.details["member"] == "bob@example.com" and removed.organization_id == org_a.pk
    assert removed.object_id == str(membership_id)


def test_details_never_carry_secrets(alice: User) -> None:
    with pytest.raises(ValueError, match="password"):
        audit.record(AuditAction.SIGN_IN, actor=alice, new_password="x")
    with pytest.raises(ValueError, match="token"):
        audit.record(AuditAction.SHARE_CREATED, actor=alice, share_token="x")
    with pytest.raises(ValueError, match="Unknown audit action"):
        audit.record("auth.guessed", actor=alice)


# --- Retention ------------------------------------------------------------------------------


def _aged(days: int, organization: Organization, **fields: Any) -> AuditEntry:
    return AuditEntry.objects.create(action=AuditAction.SIGN_IN, organization=organization,
                                     at=timezone.now() - dt.timedelta(days=days), **fields)


def test_retention_deletes_old_entries_only_and_audits_each_orgs_count(
    alice: User, charlie: User, settings: Any
) -> None:
    org_a, org_b = _membership(alice).organization, _membership(charlie).organization
    old = [_aged(400, org_a) for _ in range(3)] + [_aged(366, org_b)]
    kept = [_aged(364, org_a), _aged(1, org_b)]
    settings.AUDIT_RETENTION_DAYS = 365
    LogEntry.objects.update(timestamp=timezone.now() - dt.timedelta(days=400))
    counts = audit.prune()
    assert counts == {org_a.pk: 3, org_b.pk: 1}
    assert not AuditEntry.objects.filter(pk__in=[e.pk for e in old]).exists()
    assert AuditEntry.objects.filter(pk__in=[e.pk for e in kept]).count() == 2
    runs = {e.organization_id: e.details for e in _entries(AuditAction.RETENTION_RUN)}
    assert runs[org_a.pk]["deleted"] == 3 and runs[org_b.pk]["deleted"] == 1
    assert runs[org_a.pk]["what"] == "audit_log" and runs[org_a.pk]["older_than_days"] == 365
    assert not LogEntry.objects.exists()  # django-auditlog's rows of that age went too


def test_retention_deletes_in_batches(alice: User, monkeypatch: Any) -> None:
    monkeypatch.setattr(audit, "PRUNE_BATCH", 2)
    org = _membership(alice).organization
    for _ in range(5):
        _aged(500, org)
    assert audit.prune(days=365) == {org.pk: 5}
    assert not AuditEntry.objects.exclude(action=AuditAction.RETENTION_RUN).filter(
        at__lt=timezone.now() - dt.timedelta(days=365)).exists()


def test_after_retention_the_product_still_cannot_delete_old_entries(alice: User) -> None:
    _postgres()
    org = _membership(alice).organization
    _aged(500, org)
    audit.prune(days=365)
    survivor = _aged(500, org)
    with pytest.raises(DatabaseError, match="cannot be deleted"), transaction.atomic(), \
            connection.cursor() as cursor:
        cursor.execute("DELETE FROM accounts_auditentry WHERE id = %s", [survivor.pk])
    assert AuditEntry.objects.filter(pk=survivor.pk).exists()


def test_retention_runs_daily_from_celery_beat(alice: User, settings: Any) -> None:
    schedule = settings.CELERY_BEAT_SCHEDULE["prune-audit-log"]
    assert schedule == {"task": prune_audit_log.name, "schedule": 24 * 3600.0}
    assert settings.AUDIT_RETENTION_DAYS == 365  # the default: a year
    org = _membership(alice).organization
    _aged(400, org)
    prune_audit_log()
    assert [e.details["deleted"] for e in _entries(AuditAction.RETENTION_RUN)] == [1]


# --- Client address and the admin ---------------------------------------------------------


def test_a_forged_forwarded_for_header_never_becomes_the_client_address(
    alice: User, bob: User, org_a: Organization
) -> None:
    client = Client(REMOTE_ADDR="192.0.2.8", HTTP_X_FORWARDED_FOR="10.9.8.7")
    client.force_login(alice)
    client.post(f"/org/members/{_membership(bob).pk}/role/?org={org_a.pk}", {"role": "admin"})
    assert _entries(AuditAction.ROLE_CHANGED)[0].client_ip == "192.0.2.8"
    # django-auditlog's own row of the same change got our address too, not the header's.
    change = LogEntry.objects.filter(object_pk=str(_membership(bob).pk)).latest("timestamp")
    assert (change.remote_addr, change.actor_id) == ("192.0.2.8", alice.pk)


def test_the_django_admin_shows_entries_read_only(alice: User, admin_client: Client) -> None:
    entry = _an_entry(actor=alice, organization=_membership(alice).organization)
    base = "/admin/accounts/auditentry/"
    assert admin_client.get(base).status_code == 200
    page = admin_client.get(f"{base}{entry.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(base, {"action": "delete_selected", "_selected_action": [entry.pk],
                                    "post": "yes"}).status_code in (200, 302)
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_a_discovered_model_nobody_can_use_yet_concerns_no_org(alice: User) -> None:
    found = ModelProfile.objects.create(
        name="found", display_name="Found", model="found", context_window=1000,
        max_output_tokens=100, max_completion_tokens=100, input_price=0, cached_input_price=0,
        output_price=0, origin=ModelProfile.Origin.DISCOVERED)
    [created] = _entries(AuditAction.MODEL_PROFILE_CHANGED)
    assert created.organization_id is None and created.details["operation"] == "created"
    # Priced by an admin, it becomes usable: every org that may use it hears of it.
    found.origin = ModelProfile.Origin.ADMIN
    found.input_price = 1
    found.save()
    priced = _entries(AuditAction.MODEL_PROFILE_CHANGED)[1:]
    assert [e.organization_id for e in priced] == [_membership(alice).organization_id]
    assert priced[0].details["changes"]["origin"] == {"old": "discovered", "new": "admin"}
