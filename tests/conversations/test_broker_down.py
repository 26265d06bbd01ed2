"""A send while the broker (the task queue) is down gets ``service_unavailable`` and
costs nothing: the saved answer, which no worker will see, ends failed at $0 with no
budget held, and the socket stays usable. No turn pings the broker first (issue 23): the
publish after commit is what finds it down.

The broker is made unreachable for real (the app's broker URL points at a closed port);
the cache and channel layer stay on the test Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from kombu.exceptions import OperationalError

from accounts.models import User
from answers.dispatch import ServiceUnavailable
from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from chatsite.celery import app
from conversations.models import Message
from llm.models import ModelProfile
from tests.conftest import free_port
from tests.conversations.wsclient import connect, receive, receive_until, send

pytestmark = pytest.mark.django_db(transaction=True)


def _point_broker_at(url: str) -> None:
    # The publishing pools were opened on the old URL: the next publish opens new ones.
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def broker_down() -> Iterator[str]:
    working = app.conf.broker_url
    _point_broker_at(f"redis://127.0.0.1:{free_port()}/0")
    yield working
    _point_broker_at(working)


def held() -> Decimal:
    return sum((row.reserved_usd for row in UsagePeriod.objects.all()), Decimal(0))


def send_frame(content: str, conversation: int | None = None) -> dict[str, Any]:
    return {"type": "send", "conversation": conversation, "content": content,
            "reasoning_effort": "low", "client_id": "tab-1"}


async def test_a_send_while_the_broker_is_down_is_refused_charges_nothing_and_the_socket_stays_open(
    alice: User, o3_mini: ModelProfile, broker_down: str
) -> None:
    from asgiref.sync import sync_to_async

    communicator = await connect(alice)
    connected, _ = await communicator.connect()
    assert connected

    await send(communicator, send_frame("Is anyone there?"))
    error = await receive(communicator)

    assert error["type"] == "error"
    assert error["code"] == "service_unavailable"
    assert "nothing was charged" in error["detail"]

    def money() -> tuple[Decimal, Decimal, list[tuple[str, str, Decimal]]]:
        return (held(), sum((row.spent_usd for row in UsagePeriod.objects.all()), Decimal(0)),
                list(Message.objects.filter(role=Message.Role.ASSISTANT)
                     .values_list("status", "error_code", "cost_usd")))

    assert await sync_to_async(money)() == (0, 0, [("failed", "service_unavailable", 0)])

    # The broker is back: the same socket sends again.
    _point_broker_at(broker_down)
    await send(communicator, send_frame("Is anyone there now?"))
    frames = await receive_until(communicator, "message.created", "error")
    assert frames[-1]["type"] == "message.created"
    assert await sync_to_async(lambda: Message.objects.filter(status="pending").count())() == 1
    await communicator.disconnect()


def test_an_answer_the_broker_refuses_after_commit_ends_failed_at_zero_with_nothing_held(
    alice: User, o3_mini: ModelProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker answered the check, then failed the publish (it went down in between).
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", refuse)

    with pytest.raises(ServiceUnavailable) as refused:
        start_turn(user=alice, organization_id=None, conversation_id=None,
                   content="Queue me", reasoning_effort="low")

    assert refused.value.code == "service_unavailable"
    answer = Message.objects.get(role=Message.Role.ASSISTANT)
    assert answer.status == Message.Status.FAILED
    assert answer.error_code == "service_unavailable"
    assert answer.cost_usd == 0
    reservation = Reservation.objects.get(message=answer)
    assert reservation.settled_at is not None and reservation.charged_usd == 0
    assert held() == 0
    assert not Message.objects.filter(status__in=Message.LIVE_STATUSES).exists()
    assert all(row.spent_usd == 0 for row in UsagePeriod.objects.all())
