"""A command the database fails for real (its connection is ended by the server while the
command waits on a lock) gets a service_unavailable error frame; the socket stays open,
nothing of the command is saved, and the next send goes through."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async

from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from realtime.consumers import DATABASE_FAILED_DETAIL
from tests.conftest import end_backend_waiting_for_a_lock, money_snapshot
from tests.conversations.wsclient import connect, receive, receive_until, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

QUESTION = {"type": "send", "conversation": None, "content": "Explain Euler's identity",
            "reasoning_effort": "low", "client_id": "tab-1"}


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
    # ...until the server ends its connection.
    await sync_to_async(end_backend_waiting_for_a_lock)(second_session)
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
    rows, reservations = await sync_to_async(money_snapshot)()
    spent = sum((charged for _, charged, settled in reservations if settled), Decimal(0))
    held = sum((amount for amount, _, settled in reservations if not settled), Decimal(0))
    assert spent > 0 and rows == [(spent, held)] * 2, (rows, reservations)
    await ws.disconnect()
