"""A command the database fails for real (its connection is ended by the server while the
command waits on a lock) gets a service_unavailable error frame; the socket stays open,
nothing of the command is saved, and the next send goes through."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction

from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from realtime.consumers import DATABASE_FAILED_DETAIL
from tests.conversations.wsclient import connect, receive, receive_until, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

QUESTION = {"type": "send", "conversation": None, "content": "Explain Euler's identity",
            "reasoning_effort": "low", "client_id": "tab-1"}


def _end_the_waiting_backend(other: psycopg.Connection[Any]) -> int:
    """Terminate every other backend of this database that waits for a lock (the
    command's), as a server restart or an administrator would; returns how many."""
    rows = other.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
        " current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    ).fetchall()
    return len(rows)


def _money_snapshot() -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Any, ...]]]:
    """The period rows (spent, reserved) and the reservations (amount, charged, settled),
    read in one snapshot."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rows = sorted(UsagePeriod.objects.values_list("spent_usd", "reserved_usd"))
        reservations = list(Reservation.objects.values_list("amount_usd", "charged_usd",
                                                            "settled_at"))
    return rows, reservations


async def test_a_command_the_database_fails_gets_an_error_and_the_socket_stays(
    alice: Any, celery_worker: Any, emulator: Any, second_session: psycopg.Connection[Any]
) -> None:
    ws = await connect(alice)
    connected, _ = await ws.connect()
    assert connected
    # The send's first read (the session's user) waits behind this lock...
    await sync_to_async(second_session.execute)("BEGIN")
    await sync_to_async(second_session.execute)(
        "LOCK TABLE accounts_user IN ACCESS EXCLUSIVE MODE")
    await send(ws, QUESTION)
    ended, deadline = 0, time.monotonic() + 20
    while not ended:  # ...until the server ends its connection.
        assert time.monotonic() < deadline, "the send never waited for the lock"
        await asyncio.sleep(0.05)
        ended = await sync_to_async(_end_the_waiting_backend)(second_session)
    await sync_to_async(second_session.execute)("ROLLBACK")

    refused = await receive(ws)
    assert refused["type"] == "error" and refused["code"] == "service_unavailable", refused
    assert refused["detail"] == DATABASE_FAILED_DETAIL
    # Nothing saved, nothing held: no message, no reservation, no usage row.
    assert await sync_to_async(Message.objects.count)() == 0
    assert await sync_to_async(Reservation.objects.count)() == 0
    assert await sync_to_async(UsagePeriod.objects.count)() == 0

    # Same socket, next send: saved, answered, finished.
    await send(ws, {**QUESTION, "client_id": "tab-2"})
    created = await receive(ws)
    assert created["type"] == "message.created", created
    frames = await receive_until(ws, "done", "error")
    assert frames[-1]["type"] == "done" and frames[-1]["status"] == "done", frames[-1]
    assert await sync_to_async(Message.objects.count)() == 2
    # The turn's reservation is settled, and the period rows hold exactly the reservations
    # (the new conversation's title may be reserving meanwhile: read one snapshot).
    assert await sync_to_async(lambda: Reservation.objects.get(
        message__isnull=False).settled_at is not None)()
    rows, reservations = await sync_to_async(_money_snapshot)()
    spent = sum((charged for _, charged, settled in reservations if settled), Decimal(0))
    held = sum((amount for amount, _, settled in reservations if not settled), Decimal(0))
    assert spent > 0 and rows == [(spent, held)] * 2, (rows, reservations)
    await ws.disconnect()
