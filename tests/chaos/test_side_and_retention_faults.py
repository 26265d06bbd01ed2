"""The side worker (titles) killed or stopped mid-call, and a retention run killed mid-batch.

Titles run in a side worker process of their own (``-Q`` the side queues only, as runstack
starts it), apart from the worker that streams answers. A title holds its worst case on
the org's budget before it calls the model; the tests slow the model's title reply (the
emulator's ``json_reply_ms``, set over its control API) and signal the side worker while
the call is out. Titles are acknowledged late (CELERY_TASK_ACKS_LATE): a killed worker's
title is handed out again to the next side worker, which reserves and bills a title of
its own; the killed call's hold is released at $0 by the reaper once the call can no
longer be running (``answers.reaper._release_abandoned_title_holds``). The reaper runs
here, as beat would run it, with the held reservation moved back in time past the
provider read timeout.

Retention runs in a child process (as the daily task runs in a worker) in batches of
four; the test holds the message rows of one conversation of the fifth batch, so the run
is killed while that batch's transaction is open, with four batches committed.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import time
from decimal import Decimal
from typing import Any

import httpx2
import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.audit_models import AuditAction, AuditEntry, AuditOutcome
from accounts.models import Organization, User
from answers import reaper
from answers.replies import start_turn
from answers.titles import fallback_title
from billing.models import Reservation, UsagePeriod
from billing.quotas import period_start
from chatsite.celery import side_queues
from conversations.models import Conversation, Message
from llm.models import ModelProfile
from llm.pricing import Prices, usage_cost
from llm.types import Usage
from sharing.links import create_link
from sharing.models import SharedMessage, ShareLink
from tests.chaos.conftest import Proc, Processes, wait_for
from tests.chaos.test_worker_crashes import budgets, unacked_tasks
from tests.sharing.conftest import add_turn, make_conversation

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUESTION = "Plan the offsite for the platform team"
SLOW_TITLE_MS = 120_000  # far longer than any test waits: the call is out when signalled
Kind = Reservation.Kind


# --- Titles -----------------------------------------------------------------------------------


# A worker of the chaos app with another visibility timeout (``worker_for``).
LAUNCH = """
import sys

from tests.chaos.celery_app import app

app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                     "visibility_timeout": int(sys.argv.pop(1))}
app.worker_main(sys.argv[1:])
"""


def worker_for(processes: Processes, queues: list[str], *, run_queue: str,
               visibility_timeout: int | None = None, **env: str) -> Proc:
    """A chaos worker consuming only ``queues``: the answers' queue, or the side queues
    (titles) as runstack's side worker does. (``Processes.worker`` consumes both.)

    ``visibility_timeout``: instead of the chaos app's 2 s, after which any worker hands
    out again a task still unacknowledged, even one a live worker is still running."""
    side = queues == side_queues()
    # The side pool's threads as runstack sizes them; a few claim threads for answers.
    concurrency = settings.SIDE_CALL_CONCURRENCY if side else 4
    args = ["worker", "--pool", "threads", "--concurrency", str(concurrency),
            "--loglevel", "WARNING", "--without-heartbeat", "--without-mingle",
            "--without-gossip", "--hostname", f"chaos-{os.getpid()}-{processes.count}@%h",
            "-Q", ",".join(queues)]
    if visibility_timeout is None:
        args = [sys.executable, "-m", "celery", "-A", "tests.chaos.celery_app", *args]
    else:
        args = [sys.executable, "-c", LAUNCH, str(visibility_timeout), *args]
    proc = processes.spawn("side" if side else "answers", args,
                           CHAOS_QUEUE=run_queue, **env)
    wait_for(lambda: "chaos worker ready" in proc.log.read_text(errors="replace") or not proc.alive(),
             timeout=60, what="the worker to start", every=0.1)
    assert proc.alive(), proc.tail()
    return proc


def title_reply_ms(ms: int) -> None:
    """How long the model takes over a title (a reply in a JSON response format)."""
    response = httpx2.post(f"{settings.EMULATOR_URL}/_emulator/config", json={"json_reply_ms": ms})
    assert response.status_code == 200 and response.json()["json_reply_ms"] == ms


def title_calls(emulator: Any) -> int:
    return sum(1 for entry in emulator.requests_to("/chat/completions")
               if (entry["body"] or {}).get("response_format"))


def side_queue_length() -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return sum(int(client.llen(name)) for name in side_queues())
    finally:
        client.close()


def title_holds() -> list[Reservation]:
    return list(Reservation.objects.filter(kind=Kind.TITLE).order_by("pk"))


def answer_done_and_title_out(alice: User, emulator: Any) -> Message:
    """Send a first question; wait for its answer to finish and for its title's call to
    be out at the model, its worst case held. Returns the answer, billed exactly."""
    answer = start_turn(user=alice, organization_id=None, conversation_id=None, content=QUESTION,
                        reasoning_effort="low").assistant_message

    def title_out() -> bool:
        return title_calls(emulator) == 1 and Reservation.objects.filter(
            kind=Kind.TITLE, settled_at=None).exists()

    wait_for(title_out, timeout=60, what="the title call to reach the model")
    answer.refresh_from_db()
    assert answer.status == Message.Status.DONE and not answer.usage_estimated
    billed = Reservation.objects.get(message=answer)
    assert billed.settled_at is not None and answer.cost_usd > 0
    assert billed.charged_usd == answer.cost_usd  # to the micro-dollar
    return answer


def assert_title_out_and_held(answer: Message, hold: Reservation,
                              before: tuple[Decimal, Decimal, Decimal]) -> None:
    """The killed call's worst case still held, nothing more spent than the answer, and
    the conversation on its fallback title."""
    spent, reserved, _ = budgets()
    assert hold.amount_usd > 0
    assert reserved == before[1] + hold.amount_usd
    assert spent == before[0] + answer.cost_usd
    conversation = Conversation.objects.get(pk=answer.conversation_id)
    assert (conversation.title, conversation.title_generated) == (fallback_title(QUESTION), False)


def title_made_by_a_new_side_worker(processes: Processes, run_queue: str,
                                    killed: Reservation, conversation_id: int,
                                    o3_mini: ModelProfile) -> Reservation:
    """The killed worker's unacknowledged title, handed out again to a new side worker:
    titled and billed on a reservation of its own. Returns that reservation."""
    title_reply_ms(0)
    # A starting worker hands out again only tasks unacknowledged for longer than the
    # chaos app's visibility timeout (2 s); start it once the killed task is that old.
    time.sleep(3)
    worker_for(processes, side_queues(), run_queue=run_queue)

    def titled() -> bool:
        return (unacked_tasks() == 0 and side_queue_length() == 0
                and Conversation.objects.filter(pk=conversation_id, title_generated=True).exists()
                and not Reservation.objects.filter(kind=Kind.TITLE, settled_at=None)
                .exclude(pk=killed.pk).exists())

    wait_for(titled, timeout=60, what="a new side worker to make the title")
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.title and conversation.title != fallback_title(QUESTION)
    (made,) = [hold for hold in title_holds() if hold.pk != killed.pk]
    assert made.settled_at is not None and made.completion_tokens > 0
    assert made.charged_usd == reported_cost(made, o3_mini)
    return made


def reported_cost(hold: Reservation, profile: ModelProfile) -> Decimal:
    """What a settled title's recorded usage costs, to the micro-dollar."""
    return usage_cost(Prices.of(profile), Usage(
        prompt_tokens=hold.prompt_tokens, cached_tokens=hold.cached_tokens,
        completion_tokens=hold.completion_tokens, reasoning_tokens=hold.reasoning_tokens,
        cache_write_tokens=hold.cache_write_tokens,
    )).quantize(Decimal("0.000001"))


def reaped_at_zero(hold: Reservation) -> None:
    """The reaper leaves a title hold alone while its call may still run, and releases it
    at $0 once it cannot (created longer than the read timeout plus a minute ago)."""
    assert reaper.reap_stale_replies() == 0
    hold.refresh_from_db()
    assert hold.settled_at is None
    Reservation.objects.filter(pk=hold.pk).update(
        created_at=timezone.now() - dt.timedelta(seconds=settings.LLM_READ_TIMEOUT + 61))
    assert reaper.reap_stale_replies() == 1
    hold.refresh_from_db()
    assert hold.settled_at is not None and hold.charged_usd == 0
    assert reaper.reap_stale_replies() == 0


def assert_books_closed(answer: Message, before: tuple[Decimal, Decimal, Decimal],
                        titles: Decimal) -> None:
    """Reserved back to what it was; spent up by the answer and the titles billed only."""
    spent, reserved, charged = budgets()
    assert reserved == before[1]
    assert spent == before[0] + answer.cost_usd + titles
    assert spent == charged
    assert not Reservation.objects.filter(settled_at=None).exists()


@pytest.mark.parametrize("first", ["redelivered", "reaped"])
def test_a_side_worker_killed_mid_title_leaves_the_answer_billed_and_the_title_hold_released(
    alice: User, o3_mini: ModelProfile, emulator: Any, processes: Processes,
    private_task_queue: str, first: str,
) -> None:
    worker_for(processes, [private_task_queue], run_queue=private_task_queue)
    side = worker_for(processes, side_queues(), run_queue=private_task_queue)
    title_reply_ms(SLOW_TITLE_MS)
    before = budgets()

    answer = answer_done_and_title_out(alice, emulator)
    processes.signal(side, signal.SIGKILL)
    assert side.process.wait(timeout=10) == -signal.SIGKILL

    (killed,) = title_holds()
    assert killed.settled_at is None
    assert_title_out_and_held(answer, killed, before)
    # The title, acknowledged late, is still the broker's (unacknowledged, or already
    # handed back to the side queue by a worker's visibility check).
    assert unacked_tasks() + side_queue_length() == 1
    if first == "redelivered":
        made = title_made_by_a_new_side_worker(processes, private_task_queue, killed,
                                               answer.conversation_id, o3_mini)
        # The new worker's title knows nothing of the killed call's hold.
        killed.refresh_from_db()
        assert killed.settled_at is None
        reaped_at_zero(killed)
    else:
        # Nobody takes the title yet (no side worker): the reaper releases the hold and
        # the conversation keeps its fallback title; the books are as before the title.
        reaped_at_zero(killed)
        assert_books_closed(answer, before, Decimal(0))
        conversation = Conversation.objects.get(pk=answer.conversation_id)
        assert (conversation.title, conversation.title_generated) == (fallback_title(QUESTION), False)
        made = title_made_by_a_new_side_worker(processes, private_task_queue, killed,
                                               answer.conversation_id, o3_mini)

    assert_books_closed(answer, before, made.charged_usd or Decimal(0))
    assert title_calls(emulator) == 2  # the killed call and the new worker's


def test_a_side_worker_stopped_mid_title_finishes_the_title_before_it_exits(
    alice: User, o3_mini: ModelProfile, emulator: Any, processes: Processes,
    private_task_queue: str,
) -> None:
    # No worker may hand the title out again while it runs: a second delivery is not
    # what a stop does (the product's visibility timeout is an hour).
    worker_for(processes, [private_task_queue], run_queue=private_task_queue,
               visibility_timeout=3600)
    side = worker_for(processes, side_queues(), run_queue=private_task_queue,
                      visibility_timeout=3600, WORKER_DRAIN_SECONDS="60")
    title_reply_ms(3000)  # out at the model when the stop comes, done well within the drain
    before = budgets()

    answer = answer_done_and_title_out(alice, emulator)
    processes.signal(side, signal.SIGTERM)
    assert side.process.wait(timeout=90) == 0, side.tail()

    # Ended by the worker that was told to stop, before it exited, and acknowledged:
    # nothing is left in the broker for another worker to run again.
    (made,) = title_holds()
    assert made.settled_at is not None and made.charged_usd and made.charged_usd > 0
    assert made.charged_usd == reported_cost(made, o3_mini)
    conversation = Conversation.objects.get(pk=answer.conversation_id)
    assert conversation.title_generated and conversation.title != fallback_title(QUESTION)
    assert unacked_tasks() == 0 and side_queue_length() == 0
    assert_books_closed(answer, before, made.charged_usd)
    assert title_calls(emulator) == 1


def test_a_side_worker_whose_drain_runs_out_mid_title_leaves_the_hold_to_the_reaper(
    alice: User, o3_mini: ModelProfile, emulator: Any, processes: Processes,
    private_task_queue: str,
) -> None:
    """The stop is bounded (WORKER_DRAIN_SECONDS): a title call still out at the deadline
    dies with the process, as under SIGKILL, and is handed out again."""
    worker_for(processes, [private_task_queue], run_queue=private_task_queue)
    side = worker_for(processes, side_queues(), run_queue=private_task_queue,
                      WORKER_DRAIN_SECONDS="1")
    title_reply_ms(SLOW_TITLE_MS)
    before = budgets()

    answer = answer_done_and_title_out(alice, emulator)
    processes.signal(side, signal.SIGTERM)
    assert side.process.wait(timeout=60) == 0, side.tail()

    (cut,) = title_holds()
    assert cut.settled_at is None
    assert_title_out_and_held(answer, cut, before)
    assert unacked_tasks() + side_queue_length() == 1
    made = title_made_by_a_new_side_worker(processes, private_task_queue, cut,
                                           answer.conversation_id, o3_mini)
    reaped_at_zero(cut)
    assert_books_closed(answer, before, made.charged_usd or Decimal(0))
    assert title_calls(emulator) == 2


# --- Retention ----------------------------------------------------------------------------------


OLD = 40
BATCH = 4
HELD = 17  # in the fifth batch: four batches commit before the run blocks on it
SHARED = (1, HELD, 30)  # a committed batch's, the killed batch's and a later one's
DAYS = 30

RETENTION = """
import django

django.setup()
from conversations.retention import apply_retention

print("RETENTION", [(run.conversations_deleted, run.failed) for run in apply_retention()])
"""


def old_conversations(alice: User, org: Organization, profile: ModelProfile) -> list[Conversation]:
    """``OLD`` conversations of two billed turns each, untouched for a year, each a second
    older than the next (retention takes the oldest first), with settled reservations
    and the org's usage rows to match."""
    conversations = []
    costs = Decimal(0)
    for n in range(OLD):
        conversation = make_conversation(alice, (), title=f"Old plan {n}")
        for turn in range(2):
            cost = Decimal(f"0.{n + 1:03d}{turn + 1}17")  # micro-dollars, all different
            _, answer = add_turn(conversation, f"Old question {n}.{turn}", f"Old answer {n}.{turn}",
                                 prompt_tokens=100 + n, completion_tokens=200 + turn,
                                 reasoning_tokens=64, cost_usd=cost)
            costs += cost
            Reservation.objects.create(
                message=answer, org_period=org_period(org), user=alice, model_name="o3-mini",
                profile=profile, amount_usd=cost * 3, charged_usd=cost, cost_usd=cost,
                prompt_tokens=100 + n, completion_tokens=200 + turn, reasoning_tokens=64,
                outcome="done", settled_at=timezone.now())
        conversations.append(conversation)
    UsagePeriod.objects.filter(pk=org_period(org).pk).update(spent_usd=costs)
    return conversations


def org_period(org: Organization) -> UsagePeriod:
    period, _ = UsagePeriod.objects.get_or_create(organization=org, user=None,
                                                  period_start=period_start(org))
    return period


def age(conversations: list[Conversation]) -> None:
    long_ago = timezone.now() - dt.timedelta(days=365)
    for n, conversation in enumerate(conversations):
        Conversation.objects.filter(pk=conversation.pk).update(
            updated_at=long_ago + dt.timedelta(seconds=n))


def books() -> tuple[list[tuple[Any, ...]], ...]:
    """Every number usage reports and budgets are made of, row by row."""
    return (
        list(UsagePeriod.objects.order_by("pk").values_list("pk", "spent_usd", "reserved_usd")),
        list(Reservation.objects.order_by("pk").values_list(
            "pk", "message_id", "amount_usd", "charged_usd", "cost_usd", "prompt_tokens",
            "completion_tokens", "reasoning_tokens", "settled_at")),
        list(Message.objects.order_by("pk").values_list(
            "pk", "status", "cost_usd", "prompt_tokens", "completion_tokens", "reasoning_tokens")),
    )


def whole(conversation: Conversation) -> bool:
    """Either erased entirely or not touched at all: never in between."""
    conversation.refresh_from_db()
    texts = list(conversation.messages.values_list("content", flat=True))
    assert len(texts) == 4
    if conversation.deleted_at is None:
        return conversation.title != "" and "" not in texts
    return conversation.title == "" and set(texts) == {""}


def deleted_ids() -> set[int]:
    return set(Conversation.objects.filter(deleted_at__isnull=False).values_list("pk", flat=True))


def link_as_shared(link: ShareLink) -> bool:
    link.refresh_from_db()
    return (link.revoked_at is None and link.title != ""
            and SharedMessage.objects.filter(link=link).count() == 4)


def link_revoked(link: ShareLink) -> bool:
    link.refresh_from_db()
    return (link.revoked_at is not None and link.title == ""
            and not SharedMessage.objects.filter(link=link).exists())


def lock_waiter() -> int | None:
    """The backend of another session of this database waiting for a row lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                       " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def backend_gone(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        (count,) = cursor.fetchone()
    return count == 0


@pytest.mark.parametrize("keep_shares", [True, False], ids=["shares-kept", "shares-revoked"])
def test_a_retention_run_killed_mid_batch_leaves_whole_conversations_and_the_next_run_deletes_the_rest(
    alice: User, org_a: Organization, o3_mini: ModelProfile, processes: Processes,
    keep_shares: bool,
) -> None:
    Organization.objects.filter(pk=org_a.pk).update(retention_days=DAYS,
                                                    retention_keep_shares=keep_shares)
    old = old_conversations(alice, org_a, o3_mini)
    links = {n: create_link(user=alice, conversation_id=old[n].pk,
                            visibility=ShareLink.Visibility.ORG, expires_at=None).link
             for n in SHARED}
    age(old)
    recent = make_conversation(alice, (("A question from today", "An answer"),) * 2,
                               title="Today's plan")
    ledger = books()

    with transaction.atomic():
        # Hold one conversation's messages: the run erases four batches, then blocks in
        # the fifth batch's transaction, on them.
        list(Message.objects.select_for_update().filter(conversation=old[HELD]))
        run = processes.spawn("retention", [sys.executable, "-c", RETENTION],
                              RETENTION_BATCH_SIZE=str(BATCH))
        waiter = wait_for(lambda: len(deleted_ids()) == 4 * BATCH and lock_waiter(),
                          timeout=120, what="the run to block in its fifth batch")
        processes.signal(run, signal.SIGKILL)
        assert run.process.wait(timeout=10) == -signal.SIGKILL
    # Its open transaction ends (rolled back) when its backend finds the client gone.
    wait_for(lambda: backend_gone(waiter), timeout=30, what="the killed run's session to end")

    assert deleted_ids() == {c.pk for c in old[:4 * BATCH]}
    assert not [c.pk for c in [*old, recent] if not whole(c)], "half-deleted conversations"
    assert link_as_shared(links[HELD]) and link_as_shared(links[30])
    assert link_as_shared(links[1]) if keep_shares else link_revoked(links[1])
    assert books() == ledger
    assert not AuditEntry.objects.filter(action=AuditAction.RETENTION_RUN).exists()

    again = processes.spawn("retention", [sys.executable, "-c", RETENTION],
                            RETENTION_BATCH_SIZE=str(BATCH))
    assert again.process.wait(timeout=120) == 0, again.tail()

    assert again.tail(1) == f"RETENTION [({OLD - 4 * BATCH}, False)]"
    assert deleted_ids() == {c.pk for c in old}
    assert not [c.pk for c in [*old, recent] if not whole(c)], "half-deleted conversations"
    assert recent.deleted_at is None
    for link in links.values():
        assert link_as_shared(link) if keep_shares else link_revoked(link)
    assert books() == ledger
    (entry,) = AuditEntry.objects.filter(action=AuditAction.RETENTION_RUN)
    assert entry.outcome == AuditOutcome.SUCCESS
    assert (entry.details["conversations_deleted"], entry.details["batches"]) == (
        OLD - 4 * BATCH, (OLD - 4 * BATCH) // BATCH)
