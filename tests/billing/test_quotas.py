from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Membership, Organization, User
from answers.replies import start_turn
from billing import quotas
from billing.models import Reservation, UsagePeriod
from chatsite.errors import Refused
from conversations.models import Conversation, Message
from llm.models import ModelProfile
from tests.conftest import make_user

O3_WORST_MEDIUM = Decimal("0.110000")  # 25,000-token cap × $4.40 per million


def test_worst_case_is_prompt_at_input_price_plus_cap_at_output_price(o3_mini: Any) -> None:
    cost = quotas.worst_case_cost(o3_mini, prompt_tokens=1000, completion_cap=25_000)
    assert cost == Decimal("0.001100") + O3_WORST_MEDIUM


def test_cost_bills_cached_tokens_at_the_cached_price_and_reasoning_once(o3_mini: Any) -> None:
    # 1,200 prompt (1,024 cached) + 650 completion (512 of them reasoning).
    cost = o3_mini.cost(prompt_tokens=1200, cached_tokens=1024, completion_tokens=650)
    assert cost == Decimal("0.0036168")


def test_periods_are_calendar_months_in_the_org_time_zone(org_a: Organization) -> None:
    org_a.time_zone = "America/Los_Angeles"
    # 02:00 UTC on 1 Dec is still 30 Nov in Los Angeles.
    when = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
    assert quotas.period_start(org_a, when) == dt.date(2026, 11, 1)
    assert quotas.next_period_start(dt.date(2026, 11, 1)) == dt.date(2026, 12, 1)


def _total(amounts: Iterable[Decimal | None]) -> Decimal:
    """The sum of amounts that must all have been set by now."""
    total = Decimal(0)
    for amount in amounts:
        assert amount is not None
        total += amount
    return total


def _send(user: User, text: str = "hello", conversation: int | None = None) -> Any:
    return start_turn(user=user, organization_id=None, conversation_id=conversation,
                      content=text, reasoning_effort="medium")


@pytest.mark.django_db
def test_a_turn_reserves_its_worst_case_on_both_rows(alice: User, org_a: Organization) -> None:
    turn = _send(alice)
    reservation = Reservation.objects.get(message=turn.assistant_message)
    assert reservation.amount_usd > O3_WORST_MEDIUM
    rows = UsagePeriod.objects.filter(organization=org_a)
    assert {row.user_id for row in rows} == {None, alice.pk}
    assert all(row.reserved_usd == reservation.amount_usd for row in rows)


@pytest.mark.django_db
def test_it_refuses_a_turn_over_the_member_budget_and_changes_nothing(
    alice: User, bob: User, org_a: Organization
) -> None:
    membership = Membership.objects.get(user=bob)
    membership.monthly_budget_usd = Decimal("0.10")  # less than one worst case
    membership.save(update_fields=["monthly_budget_usd"])
    with pytest.raises(Refused) as refused:
        _send(bob)
    assert refused.value.code == "quota_exceeded"
    assert "$0.10" in refused.value.detail and "Request more" in refused.value.detail
    assert not Message.objects.exists()
    assert not Reservation.objects.exists()
    assert all(row.reserved_usd == 0 for row in UsagePeriod.objects.all())


@pytest.mark.django_db
def test_it_refuses_a_turn_over_the_org_budget(alice: User, org_a: Organization) -> None:
    org_a.monthly_budget_usd = Decimal("0.05")
    org_a.save(update_fields=["monthly_budget_usd"])
    with pytest.raises(Refused) as refused:
        _send(alice)
    assert refused.value.code == "quota_exceeded"
    assert "organization's monthly budget of $0.05" in refused.value.detail


@pytest.mark.django_db
def test_settlement_charges_actual_releases_the_rest_and_happens_once(alice: User) -> None:
    turn = _send(alice)
    reservation = Reservation.objects.get(message=turn.assistant_message)
    with transaction.atomic():
        assert quotas.settle(message_id=turn.assistant_message.pk, cost=Decimal("0.000917"), estimated=False)
    with transaction.atomic():  # a redelivered task settling again
        assert not quotas.settle(message_id=turn.assistant_message.pk, cost=Decimal("0.5"), estimated=False)
    for row in UsagePeriod.objects.all():
        assert row.reserved_usd == 0
        assert row.spent_usd == Decimal("0.000917")
    reservation.refresh_from_db()
    assert reservation.charged_usd == Decimal("0.000917") and reservation.settled_at


@pytest.mark.django_db(transaction=True)
def test_two_settlements_racing_for_one_turn_charge_it_once(alice: User) -> None:
    """A late worker and the reaper settling the same turn at once: the second waits on
    the reservation's row lock, then finds it settled and changes nothing, the period
    rows included."""
    turn = _send(alice)
    message_id = turn.assistant_message.pk
    first_settled, second_done = threading.Event(), threading.Event()
    results: dict[str, bool] = {}

    def second() -> None:
        try:
            first_settled.wait(5)
            with transaction.atomic():
                results["second"] = quotas.settle(message_id=message_id, cost=Decimal("0.5"),
                                                  estimated=True)
        finally:
            connection.close()
            second_done.set()

    racer = threading.Thread(target=second)
    racer.start()
    with transaction.atomic():
        results["first"] = quotas.settle(message_id=message_id, cost=Decimal("0.000917"),
                                         estimated=False)
        first_settled.set()
        # Commit only once the second settlement waits on our row lock.
        assert _until_one_waits_on_a_lock() and not second_done.is_set()
    racer.join(10)
    assert results == {"first": True, "second": False}
    rows = list(UsagePeriod.objects.all())
    assert len(rows) == 2
    for row in rows:
        assert (row.spent_usd, row.reserved_usd) == (Decimal("0.000917"), 0)
    reservation = Reservation.objects.get(message_id=message_id)
    assert (reservation.charged_usd, reservation.estimated) == (Decimal("0.000917"), False)


@pytest.mark.parametrize("settlement", ["answer", "title"])
@pytest.mark.django_db(transaction=True)
def test_a_settlement_takes_the_period_rows_in_the_order_a_hold_does(alice: User, settlement: str) -> None:
    """A turn's holds lock the org's row, then the member's. A settlement that locked them
    in the table's physical order could take the member's row first and wait for the
    org's: a deadlock (seen with 100 answers of one person settling while their titles
    were reserved). Even when the planner reads the table in physical order, with the
    member's row first, an answer's settlement (one statement on PostgreSQL) and a
    title's (``_charge``) wait for the org's row holding nothing."""
    turn = _send(alice)
    reservation = Reservation.objects.get(message=turn.assistant_message)
    org_row, member_row = reservation.org_period_id, reservation.member_period_id
    assert org_row is not None and member_row is not None and org_row < member_row
    # Rewrite the org's row: its live version now sits after the member's in the table.
    UsagePeriod.objects.filter(pk=org_row).update(alerted_80=False)
    holding_org = threading.Event()
    errors: list[BaseException] = []

    def settle() -> None:
        try:
            holding_org.wait(5)
            with transaction.atomic():
                with connection.cursor() as cursor:  # the table in physical order
                    cursor.execute("SET LOCAL enable_indexscan = off")
                    cursor.execute("SET LOCAL enable_bitmapscan = off")
                if settlement == "answer":
                    assert quotas.settle(message_id=turn.assistant_message.pk,
                                         cost=Decimal("0.000100"), estimated=False)
                else:
                    locked = Reservation.objects.select_for_update().get(pk=reservation.pk)
                    quotas._charge(locked, Decimal("0.000100"), False)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    settler = threading.Thread(target=settle)
    settler.start()
    with transaction.atomic():  # as a hold does: the org's row, then the member's
        UsagePeriod.objects.select_for_update().get(pk=org_row)
        holding_org.set()
        assert _until_one_waits_on_a_lock()
        UsagePeriod.objects.select_for_update().get(pk=member_row)
    settler.join(10)
    assert errors == []
    for row in UsagePeriod.objects.all():
        assert row.spent_usd == Decimal("0.000100")


def _until_one_waits_on_a_lock(seconds: float = 10) -> bool:
    """Poll until another session of this test database waits on a row lock; whether
    one does when the time is up."""
    deadline = time.monotonic() + seconds
    while not _waiting_on_a_lock() and time.monotonic() < deadline:
        time.sleep(0.02)
    return _waiting_on_a_lock()


def _waiting_on_a_lock() -> bool:
    """Whether another session of this test database waits on a row lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        return bool(cursor.fetchone()[0])


@pytest.mark.django_db
def test_a_deleted_members_turn_is_settled_on_the_orgs_row_alone(alice: User, org_a: Organization) -> None:
    turn = _send(alice)
    reservation = Reservation.objects.get(message=turn.assistant_message)
    assert reservation.member_period_id is not None
    UsagePeriod.objects.filter(pk=reservation.member_period_id).delete()  # SET_NULL on the reservation
    with transaction.atomic():
        assert quotas.settle(message_id=turn.assistant_message.pk, cost=Decimal("0.000917"), estimated=False)
    [org_row] = UsagePeriod.objects.all()
    assert org_row.user_id is None
    assert (org_row.spent_usd, org_row.reserved_usd) == (Decimal("0.000917"), 0)


@pytest.mark.django_db
def test_a_new_month_starts_from_zero(alice: User, org_a: Organization) -> None:
    org_a.member_budget_usd = Decimal("0.20")
    org_a.save(update_fields=["member_budget_usd"])
    turn = _send(alice)
    with transaction.atomic():
        quotas.settle(message_id=turn.assistant_message.pk, cost=Decimal("0.15"), estimated=False)
    Message.objects.update(status=Message.Status.DONE)
    with pytest.raises(Refused):
        _send(alice, conversation=turn.conversation.pk)
    next_month = quotas.next_period_start(quotas.period_start(org_a)) + dt.timedelta(hours=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timezone, "now", lambda: dt.datetime.combine(next_month, dt.time(12), tzinfo=dt.UTC))
        new_turn = _send(alice, conversation=turn.conversation.pk)
    assert new_turn.assistant_message.reservation.member_period.period_start == next_month.replace(day=1)


@pytest.mark.slow
def test_concurrent_turns_never_overspend_an_exact_budget(
    celery_worker: Any, emulator: Any
) -> None:
    """N simultaneous turns against a budget that fits exactly K worst cases."""
    n, k = 50, 7
    owner = make_user("owner@example.com", org_name="Race Inc")
    organization = owner.memberships.get().organization
    users = [owner] + [
        make_user(f"member{i}@example.com", organization=organization) for i in range(n - 1)
    ]
    # Every turn here has the same worst case; the budget fits exactly k of them.
    probe = quotas.worst_case_cost(
        ModelProfile.objects.get(name="o3-mini"),
        prompt_tokens=_prompt_estimate(organization), completion_cap=25_000,
    )
    organization.monthly_budget_usd = (probe * k).quantize(Decimal("0.01"), rounding="ROUND_CEILING")
    if organization.monthly_budget_usd >= probe * (k + 1):
        pytest.fail("budget rounding would admit an extra turn")
    organization.save(update_fields=["monthly_budget_usd"])
    # No answer may settle (and free budget for one more turn) while the N sends still
    # race: under a loaded machine the last of 50 threads can start a second after the
    # first, so every answer reasons longer than that before it ends.
    emulator.config.think_ms = {"low": 0, "medium": 5000, "high": 0}

    barrier = threading.Barrier(n)
    started: list[int] = []
    refused: list[str] = []
    lock = threading.Lock()

    def attempt(user: User) -> None:
        try:
            barrier.wait()
            turn = _send(user, "race")
            with lock:
                started.append(turn.assistant_message.pk)
        except Refused as refusal:
            with lock:
                refused.append(refusal.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(started) == k
    assert refused == ["quota_exceeded"] * (n - k)
    deadline = time.monotonic() + 60
    while Message.objects.filter(status__in=Message.LIVE_STATUSES).exists():
        assert time.monotonic() < deadline, "answers did not finish"
        time.sleep(0.1)
    # Each finished answer's title is reserved and billed too: wait for every one.
    while (
        Conversation.objects.filter(messages__pk__in=started, title_generated=False).exists()
        or Reservation.objects.filter(settled_at=None).exists()
    ):
        assert time.monotonic() < deadline, "titles did not finish"
        time.sleep(0.1)
    upstream_calls = [e for e in emulator.journal if e["path"].endswith("/chat/completions")
                      and e["body"] and e["body"].get("stream")]
    assert len(upstream_calls) == k
    org_row = UsagePeriod.objects.get(organization=organization, user=None)
    assert org_row.reserved_usd == 0
    assert org_row.spent_usd <= organization.monthly_budget_usd
    titles = Reservation.objects.filter(kind=Reservation.Kind.TITLE, org_period=org_row)
    assert titles.count() == k
    assert org_row.spent_usd == _total(
        Message.objects.filter(pk__in=started).values_list("cost_usd", flat=True)
    ) + _total(titles.values_list("charged_usd", flat=True))


def _prompt_estimate(organization: Organization) -> int:
    from answers.prompts import estimate_prompt_tokens

    profile = ModelProfile.objects.get(name="o3-mini")
    return estimate_prompt_tokens(conversation_id=None, content="race", profile=profile,
                                  org_message="", custom="", completion_cap=25_000)


# --- Extending a live turn's reservation (a tool round, a retry) -------------------------


def _rows() -> dict[int | None, tuple[Decimal, Decimal]]:
    return {row.user_id: (row.spent_usd, row.reserved_usd) for row in UsagePeriod.objects.all()}


@pytest.mark.django_db
def test_an_extension_holds_more_on_both_rows_when_it_fits_both(alice: User, org_a: Organization) -> None:
    turn = _send(alice)
    held = Reservation.objects.get(message=turn.assistant_message).amount_usd

    extended = quotas.extend(message_id=turn.assistant_message.pk, amount=Decimal("0.0200001"))

    assert extended == held + Decimal("0.020001")  # rounded up to the micro-dollar
    assert Reservation.objects.get(message=turn.assistant_message).amount_usd == extended
    assert _rows() == {None: (0, extended), alice.pk: (0, extended)}
    with transaction.atomic():
        assert quotas.settle(message_id=turn.assistant_message.pk, cost=Decimal("0.05"),
                             estimated=False)
    assert _rows() == {None: (Decimal("0.05"), 0), alice.pk: (Decimal("0.05"), 0)}


@pytest.mark.django_db
@pytest.mark.parametrize("budget", ["member", "org"])
def test_an_extension_past_either_budget_changes_nothing(
    alice: User, org_a: Organization, budget: str
) -> None:
    turn = _send(alice)
    held = Reservation.objects.get(message=turn.assistant_message).amount_usd
    if budget == "member":
        Membership.objects.filter(user=alice).update(monthly_budget_usd=Decimal("0.20"))
    else:
        Organization.objects.filter(pk=org_a.pk).update(monthly_budget_usd=Decimal("0.20"))
    room = Decimal("0.20") - held
    before = _rows()

    assert quotas.extend(message_id=turn.assistant_message.pk, amount=room + quotas.CENT) is None

    assert _rows() == before
    assert Reservation.objects.get(message=turn.assistant_message).amount_usd == held
    # Exactly the room left fits, to the micro-dollar.
    assert quotas.extend(message_id=turn.assistant_message.pk, amount=room) == Decimal("0.20")


@pytest.mark.django_db
def test_a_settled_turn_or_a_member_who_left_the_org_gets_no_extension(
    alice: User, bob: User, org_a: Organization
) -> None:
    settled, left = _send(alice), _send(bob)
    with transaction.atomic():
        quotas.settle(message_id=settled.assistant_message.pk, cost=Decimal(0), estimated=False)
    Membership.objects.filter(user=bob).delete()
    before = _rows()

    assert quotas.extend(message_id=settled.assistant_message.pk, amount=Decimal("0.01")) is None
    assert quotas.extend(message_id=left.assistant_message.pk, amount=Decimal("0.01")) is None
    assert _rows() == before


@pytest.mark.django_db(transaction=True)
def test_two_turns_extending_into_the_last_room_of_a_budget_get_it_once(
    alice: User, org_a: Organization
) -> None:
    """Two live turns of one member each need one more request reserved; the budget has
    room for one. The second waits on the rows the first locked, then sees them full."""
    first, second = _send(alice), _send(alice, "another")
    held = UsagePeriod.objects.get(user=alice).reserved_usd
    Membership.objects.filter(user=alice).update(monthly_budget_usd=Decimal("0.30"))
    room = Decimal("0.30") - held
    first_held, second_done = threading.Event(), threading.Event()
    results: dict[str, Decimal | None] = {}

    def other() -> None:
        try:
            first_held.wait(5)
            results["second"] = quotas.extend(message_id=second.assistant_message.pk, amount=room)
        finally:
            connection.close()
            second_done.set()

    racer = threading.Thread(target=other)
    racer.start()
    with transaction.atomic():
        results["first"] = quotas.extend(message_id=first.assistant_message.pk, amount=room)
        first_held.set()
        assert _until_one_waits_on_a_lock() and not second_done.is_set()
    racer.join(10)
    assert results["first"] is not None and results["second"] is None
    row = UsagePeriod.objects.get(user=alice)
    assert row.reserved_usd == Decimal("0.30")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["one statement", "row by row"])
def test_settlement_never_charges_more_than_reserved_and_says_so_loudly(
    alice: User, path: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "one statement" and connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    turn = _send(alice)
    held = Reservation.objects.get(message=turn.assistant_message).amount_usd
    if path == "row by row":  # as on SQLite (embedded mode)
        monkeypatch.setattr(quotas, "_settle_in_one_statement",
                            lambda *args: pytest.fail("the row-by-row path was not taken"))
        monkeypatch.setattr(connection, "vendor", "sqlite")

    with transaction.atomic():
        assert quotas.settle(message_id=turn.assistant_message.pk, cost=held + Decimal("0.004864"),
                             estimated=False)

    assert Reservation.objects.get(message=turn.assistant_message).charged_usd == held
    assert _rows() == {None: (held, 0), alice.pk: (held, 0)}
    [record] = [r for r in caplog.records if r.name == "billing.quotas"]
    assert record.levelname == "ERROR" and "over its reservation" in record.getMessage()
