"""Retention: the daily job deletes the conversations of orgs with retention on that nobody
touched for the org's number of days, in batches of RETENTION_BATCH_SIZE, as their owners'
delete does: live answers settled to the micro-dollar, stored provider responses
forgotten, share links kept or deleted as the org chose, usage numbers kept. Each run is
audited per org. Members see the policy on the chat page."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.audit_models import AuditAction, AuditEntry, AuditOutcome
from accounts.erasure import delete_user
from accounts.models import Organization, User
from answers import tasks as answer_tasks
from answers.draft import AnswerDraft
from answers.engine import engine, run_generation
from answers.lifecycle import Abandoned, claim
from answers.relay import Relay
from answers.replies import start_turn
from billing import usage
from billing.models import Reservation, UsagePeriod
from billing.quotas import period_start
from conversations import retention
from conversations.models import Conversation, Message
from conversations.tasks import apply_retention
from llm.models import ModelProfile
from sharing.links import ShareRefused, create_link, update_link
from sharing.models import SharedMessage, ShareLink
from tests.conversations.test_background_answers import (
    begin,
    forgotten_later,
    upstream,
    work_then_die,
)
from tests.llm.test_responses_api import make_responses_profile
from tests.sharing.conftest import make_conversation

pytestmark = pytest.mark.django_db

DAYS = 30


def age(conversation: Conversation | int, days: float) -> None:
    """Make the conversation look untouched for ``days``."""
    pk = conversation if isinstance(conversation, int) else conversation.pk
    Conversation.objects.filter(pk=pk).update(updated_at=timezone.now() - dt.timedelta(days=days))


def turn_on(organization: Organization, days: int = DAYS, *, keep_shares: bool = True) -> None:
    Organization.objects.filter(pk=organization.pk).update(
        retention_days=days, retention_keep_shares=keep_shares)


def old_conversation(user: User, *, days: float = DAYS + 1, title: str = "Old plans",
                     **kwargs: Any) -> Conversation:
    conversation = make_conversation(user, (("A question from long ago", "An old answer"),),
                                     title=title, **kwargs)
    age(conversation, days)
    return conversation


def erased(conversation: Conversation) -> bool:
    conversation.refresh_from_db()
    texts = set(conversation.messages.values_list("content", flat=True))
    return conversation.deleted_at is not None and conversation.title == "" and texts == {""}


def intact(conversation: Conversation) -> bool:
    conversation.refresh_from_db()
    texts = set(conversation.messages.values_list("content", flat=True))
    return conversation.deleted_at is None and conversation.title != "" and "" not in texts


def run_entries(organization: Organization) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(organization_id=organization.pk,
                                          action=AuditAction.RETENTION_RUN).order_by("id"))


def signed_in(user: User) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def org_money(organization: Organization) -> list[tuple[int | None, Decimal, Decimal]]:
    return sorted(((row.user_id, row.spent_usd, row.reserved_usd)
                   for row in UsagePeriod.objects.filter(organization=organization)),
                  key=lambda row: row[0] or 0)


# --- Which conversations go -------------------------------------------------------------------


def test_it_deletes_only_conversations_untouched_for_the_orgs_days_in_orgs_with_retention_on(
    alice: User, bob: User, charlie: User, org_a: Organization
) -> None:
    turn_on(org_a)
    alices_old = old_conversation(alice)
    bobs_old = old_conversation(bob, days=400)
    recent = old_conversation(alice, days=DAYS - 1, title="Last month's")
    fresh = make_conversation(alice, title="Today's")
    charlies_old = old_conversation(charlie, days=400)  # his org keeps everything

    runs = retention.apply_retention()

    assert erased(alices_old) and erased(bobs_old)
    assert intact(recent) and intact(fresh) and intact(charlies_old)
    assert [(run.organization_id, run.conversations_deleted) for run in runs] == [(org_a.pk, 2)]
    assert not run_entries(charlies_old.organization)


def test_a_deleted_conversation_is_not_deleted_again(alice: User, org_a: Organization) -> None:
    turn_on(org_a)
    old_conversation(alice)
    assert retention.apply_retention()[0].conversations_deleted == 1

    again = retention.apply_retention()

    assert again[0].conversations_deleted == 0 and again[0].batches == 0


def test_erased_conversations_are_gone_for_their_owner_as_after_their_own_delete(
    alice: User, org_a: Organization
) -> None:
    turn_on(org_a)
    conversation = old_conversation(alice, custom_instructions="Answer as a pirate")
    client = signed_in(alice)
    assert client.get(f"/c/{conversation.pk}/").status_code == 200

    retention.apply_retention()

    conversation.refresh_from_db()
    assert conversation.custom_instructions == "" and conversation.title_generated
    assert client.get(f"/c/{conversation.pk}/").status_code == 404
    assert conversation.pk not in [i["id"] for i in client.get("/conversations/").json()["items"]]


# --- Batches ---------------------------------------------------------------------------------


def test_it_deletes_in_batches_of_the_batch_size_each_in_its_own_transaction(
    alice: User, bob: User, org_a: Organization, settings: Any
) -> None:
    settings.RETENTION_BATCH_SIZE = 2
    turn_on(org_a)
    olds = [old_conversation(alice if n % 2 else bob, days=DAYS + 1 + n) for n in range(5)]

    with CaptureQueriesContext(connection) as queries:
        runs = retention.apply_retention()

    statements = [q["sql"] for q in queries.captured_queries]
    takes = [sql for sql in statements if "FOR UPDATE SKIP LOCKED" in sql]
    # Three batches of at most two (2 + 2 + 1), then one that finds nothing left.
    assert len(takes) == 4 and all("LIMIT 2" in sql for sql in takes)
    # Each take opens a transaction of its own (a savepoint inside this test's).
    assert sum(sql.startswith("SAVEPOINT") for sql in statements) == 4
    assert not [sql for sql in statements if sql.upper().startswith("LOCK")]
    assert (runs[0].batches, runs[0].conversations_deleted) == (3, 5)
    assert all(erased(conversation) for conversation in olds)
    assert run_entries(org_a)[0].details["batches"] == 3


def test_the_oldest_go_first(alice: User, org_a: Organization, settings: Any) -> None:
    settings.RETENTION_BATCH_SIZE = 1
    turn_on(org_a)
    newer = old_conversation(alice, days=DAYS + 2)
    oldest = old_conversation(alice, days=DAYS + 90)

    batch = retention._erase_batch(org_a, timezone.now() - dt.timedelta(days=DAYS),
                                   now=timezone.now(), limit=1)

    assert batch is not None and batch[0].conversations == 1
    assert erased(oldest) and intact(newer)


@pytest.mark.django_db(transaction=True)
def test_a_conversation_a_send_holds_is_passed_over_without_waiting(
    alice: User, org_a: Organization, o3_mini: Any
) -> None:
    """A send locks its conversation's row (start_turn). Retention does not wait for it:
    the other conversations go, the held one stays for the next run."""
    turn_on(org_a)
    held, other = old_conversation(alice), old_conversation(alice)
    locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        try:
            with transaction.atomic():
                Conversation.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    sender = threading.Thread(target=hold_the_row)
    sender.start()
    try:
        assert locked.wait(10)
        with connection.cursor() as cursor:  # a wait would fail the test, not hang it
            cursor.execute("SET lock_timeout = '2s'")
        runs = retention.apply_retention()
    finally:
        release.set()
        sender.join(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")

    assert runs[0].conversations_deleted == 1 and not runs[0].failed
    assert erased(other) and intact(held)
    assert retention.apply_retention()[0].conversations_deleted == 1
    assert erased(held)


# --- Share links --------------------------------------------------------------------------------


def shared(user: User, conversation: Conversation) -> tuple[ShareLink, str]:
    issued = create_link(user=user, conversation_id=conversation.pk,
                         visibility=ShareLink.Visibility.ORG, expires_at=None)
    return issued.link, issued.token


def test_share_links_are_kept_when_the_org_keeps_them(
    alice: User, bob: User, org_a: Organization
) -> None:
    turn_on(org_a, keep_shares=True)
    conversation = old_conversation(alice, title="Quarterly plan")
    link, token = shared(alice, conversation)
    age(conversation, DAYS + 1)  # sharing does not touch the conversation

    runs = retention.apply_retention()

    assert erased(conversation)
    link.refresh_from_db()
    assert link.revoked_at is None and link.title == "Quarterly plan"
    assert SharedMessage.objects.filter(link=link).count() == 2
    page = signed_in(bob).get(f"/s/{token}/")
    assert page.status_code == 200 and "An old answer" in page.content.decode()
    assert (runs[0].share_links_kept, runs[0].share_links_deleted) == (1, 0)
    details = run_entries(org_a)[0].details
    assert (details["share_links_kept"], details["share_links_deleted"]) == (1, 0)


def test_a_kept_link_cannot_be_moved_to_the_erased_conversation(
    alice: User, org_a: Organization
) -> None:
    turn_on(org_a, keep_shares=True)
    conversation = old_conversation(alice)
    link, _token = shared(alice, conversation)
    age(conversation, DAYS + 1)
    retention.apply_retention()

    with pytest.raises(ShareRefused, match="keeps the snapshot it has"):
        update_link(user=alice, link_id=link.pk, visibility="org", expires_at=None)

    assert SharedMessage.objects.filter(link=link).count() == 2  # the snapshot is untouched
    assert not SharedMessage.objects.filter(link=link, content="").exists()


def test_share_links_are_deleted_with_their_conversations_when_the_org_says_so(
    alice: User, bob: User, org_a: Organization
) -> None:
    turn_on(org_a, keep_shares=False)
    conversation = old_conversation(alice)
    link, token = shared(alice, conversation)
    age(conversation, DAYS + 1)

    runs = retention.apply_retention()

    link.refresh_from_db()
    assert link.revoked_at is not None and link.title == ""
    assert not SharedMessage.objects.filter(link=link).exists()
    assert signed_in(bob).get(f"/s/{token}/").status_code == 404
    assert (runs[0].share_links_kept, runs[0].share_links_deleted) == (0, 1)


# --- Live answers and money -------------------------------------------------------------------


@pytest.fixture
def demo_provider(settings: Any, emulator: Any) -> None:
    settings.OPENAI_API_KEY = ""


def ask(user: User, content: str) -> Message:
    return start_turn(user=user, organization_id=None, conversation_id=None, content=content,
                      reasoning_effort="low").assistant_message


def test_a_pending_answer_in_an_old_conversation_is_cancelled_and_its_hold_released(
    alice: User, org_a: Organization, demo_provider: None
) -> None:
    """Settled first, not skipped: an answer live in a conversation untouched for the
    whole period is stuck, and skipping would hold its budget forever."""
    turn_on(org_a)
    answer = ask(alice, "Think about this for a month")
    assert org_money(org_a)[0][2] > 0  # the worst case is held
    age(answer.conversation_id, DAYS + 1)

    runs = retention.apply_retention()

    ended = Message.objects.get(pk=answer.pk)
    assert (ended.status, ended.cost_usd) == (Message.Status.CANCELLED, Decimal(0))
    reservation = Reservation.objects.get(message_id=answer.pk)
    assert reservation.settled_at is not None and reservation.charged_usd == Decimal(0)
    assert all(reserved == spent == 0 for _user, spent, reserved in org_money(org_a))
    assert runs[0].live_answers_ended == 1
    assert run_entries(org_a)[0].details["live_answers_ended"] == 1


def test_a_streaming_answer_is_charged_what_it_showed_once_to_the_micro_dollar(
    alice: User, org_a: Organization, demo_provider: None
) -> None:
    turn_on(org_a)
    message = claim(ask(alice, "Write an essay").pk)  # what the worker does first
    assert message is not None
    worker = Relay(AnswerDraft(message.pk))
    worker.add_text("The first words of a long essay")
    engine.run_here(lambda runtime: worker.checkpoint(runtime.db, 0.0))
    age(message.conversation_id, DAYS + 1)

    retention.apply_retention()

    answer = Message.objects.get(pk=message.pk)
    assert answer.status == Message.Status.CANCELLED and answer.usage_estimated
    assert answer.cost_usd > 0 and answer.content == ""
    assert Reservation.objects.get(message=answer).charged_usd == answer.cost_usd
    assert org_money(org_a) == [(None, answer.cost_usd, Decimal(0)),
                                (alice.pk, answer.cost_usd, Decimal(0))]
    # The worker, finding the answer ended, writes and charges nothing more.
    with pytest.raises(Abandoned):
        worker.add_text(" and more")
        engine.run_here(lambda runtime: worker.checkpoint(runtime.db, 1.0))
    assert org_money(org_a)[0][1] == answer.cost_usd


@pytest.fixture
def responses_profile(settings: Any, emulator: Any) -> ModelProfile:
    settings.OPENAI_API_KEY = ""
    settings.STREAM_FLUSH_MS = 0
    settings.STREAM_CHECKPOINT_SECONDS = 3600
    return make_responses_profile()


def test_a_background_answers_stored_response_is_cancelled_and_deleted_upstream(
    bob: User, org_a: Organization, responses_profile: ModelProfile, emulator: Any,
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any,
) -> None:
    turn_on(org_a)
    emulator.push({"reply": "Step one. Step two. Step three. Step four.", "think_ms": 0,
                   "tokens_per_second": 5})  # still writing when retention comes
    message = claim(begin(bob).pk)
    assert message is not None
    dead = work_then_die(message, deltas=3, checkpoint_at=2)
    queued = forgotten_later(monkeypatch)
    age(message.conversation_id, DAYS + 1)

    with django_capture_on_commit_callbacks(execute=True):
        retention.apply_retention()

    assert queued == [(responses_profile.pk, dead.draft.response_id)]
    answer_tasks.forget_background_response(*queued[0])  # what the worker taking it runs
    assert [e for e in upstream(emulator) if dead.draft.response_id in e[1]] == [
        ("POST", f"/v1/responses/{dead.draft.response_id}/cancel", {}),
        ("DELETE", f"/v1/responses/{dead.draft.response_id}", {}),
    ]
    answer = Message.objects.get(pk=message.pk)
    assert answer.status == Message.Status.CANCELLED
    assert Reservation.objects.get(message=answer).charged_usd == answer.cost_usd
    assert all(reserved == 0 for _user, _spent, reserved in org_money(org_a))


def test_retention_keeps_the_usage_numbers_to_the_micro_dollar(
    alice: User, bob: User, org_a: Organization, demo_provider: None
) -> None:
    turn_on(org_a)
    answers = [ask(person, f"{person.email} asks") for person in (alice, bob)]
    for answer in answers:
        run_generation(answer.pk)
        age(answer.conversation_id, DAYS + 1)
    money = org_money(org_a)
    ledger = list(Reservation.objects.order_by("pk").values())
    report = usage.usage_report(organization=org_a, period=period_start(org_a))
    assert report.total.cost > 0

    assert retention.apply_retention()[0].conversations_deleted == 2

    assert org_money(org_a) == money
    assert list(Reservation.objects.order_by("pk").values()) == ledger
    after = usage.usage_report(organization=org_a, period=period_start(org_a))
    assert after.total.cost == report.total.cost
    assert after.by_member == report.by_member
    for answer in answers:
        kept = Message.objects.get(pk=answer.pk)
        assert kept.content == "" and kept.cost_usd > 0 and kept.completion_tokens > 0


def test_delete_my_account_still_erases_the_person_and_keeps_the_orgs_usage(
    alice: User, bob: User, org_a: Organization, demo_provider: None
) -> None:
    """After the move into apps, and beside retention: erasing a person empties every
    conversation of theirs (retention's and the rest), keeps anonymous usage."""
    turn_on(org_a)
    old = ask(bob, "Bob's old secret")
    run_generation(old.pk)
    age(old.conversation_id, DAYS + 1)
    retention.apply_retention()
    recent = ask(bob, "Bob's recent secret")
    run_generation(recent.pk)
    spent = org_money(org_a)[0]
    assert spent[0] is None and spent[1] > 0

    delete_user(user=bob)

    assert not User.objects.filter(pk=bob.pk).exists()
    assert not Message.objects.filter(content__contains="secret").exists()
    assert set(Conversation.objects.filter(pk__in=[old.conversation_id, recent.conversation_id])
               .values_list("user_id", "title")) == {(None, "")}
    assert org_money(org_a)[0] == spent  # the org's row, to the micro-dollar
    report = usage.usage_report(organization=org_a, period=period_start(org_a))
    assert dict(report.by_member)[usage.DELETED_MEMBER].cost == spent[1]


# --- Audit and the task -----------------------------------------------------------------------


def test_each_run_is_audited_per_org_with_its_counts(
    alice: User, charlie: User, org_a: Organization
) -> None:
    org_b = Organization.objects.get(memberships__user=charlie)
    turn_on(org_a, keep_shares=False)
    turn_on(org_b, 7)
    old_conversation(alice)
    old_conversation(alice, days=500)
    old_conversation(charlie, days=8)

    apply_retention.run()  # the Celery task, run here

    (a_entry,) = run_entries(org_a)
    (b_entry,) = run_entries(org_b)
    assert a_entry.outcome == b_entry.outcome == AuditOutcome.SUCCESS
    assert a_entry.actor_id is None and a_entry.client_ip is None
    assert {key: a_entry.details[key] for key in (
        "what", "older_than_days", "conversations_deleted", "share_links_deleted",
        "share_links_kept", "live_answers_ended", "batches")} == {
        "what": "conversations", "older_than_days": DAYS, "conversations_deleted": 2,
        "share_links_deleted": 0, "share_links_kept": 0, "live_answers_ended": 0, "batches": 1}
    assert (b_entry.details["older_than_days"], b_entry.details["conversations_deleted"]) == (7, 1)


def test_a_failing_org_is_audited_as_failed_and_the_others_still_run(
    alice: User, charlie: User, org_a: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    org_b = Organization.objects.get(memberships__user=charlie)
    turn_on(org_a)
    turn_on(org_b)
    old_conversation(alice)
    theirs = old_conversation(charlie)
    real = retention.erase_conversations

    def refuse_org_a(ids: list[int], **kwargs: Any) -> Any:
        if Conversation.objects.filter(pk__in=ids, organization=org_a).exists():
            raise RuntimeError("disk full")
        return real(ids, **kwargs)

    monkeypatch.setattr(retention, "erase_conversations", refuse_org_a)
    retention.apply_retention()

    assert run_entries(org_a)[0].outcome == AuditOutcome.FAILURE
    assert run_entries(org_a)[0].details["conversations_deleted"] == 0
    assert run_entries(org_b)[0].outcome == AuditOutcome.SUCCESS and erased(theirs)


def test_the_daily_job_is_scheduled_under_its_stable_name(settings: Any) -> None:
    jobs = {job["task"]: job["schedule"] for job in settings.CELERY_BEAT_SCHEDULE.values()}
    assert jobs["conversations.tasks.apply_retention"] == 24 * 3600.0
    assert apply_retention.name == "conversations.tasks.apply_retention"


# --- What members see ---------------------------------------------------------------------------


def test_members_see_the_orgs_retention_on_the_chat_page(
    alice: User, bob: User, charlie: User, org_a: Organization, o3_mini: Any
) -> None:
    line = "Conversations older than 30 days are deleted"
    assert line not in signed_in(bob).get("/").content.decode()

    turn_on(org_a, 30)

    assert line in signed_in(bob).get("/").content.decode()
    assert line in signed_in(alice).get("/").content.decode()
    assert "Conversations older than" not in signed_in(charlie).get("/").content.decode()
    turn_on(org_a, 1)
    assert "Conversations older than 1 day are deleted" in signed_in(bob).get("/").content.decode()
