from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message
from tests.conversations.wsclient import connect, receive, receive_until, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_a_sent_message_streams_an_answer_and_records_its_cost(
    alice: Any, celery_worker: Any, emulator: Any
) -> None:
    emulator.config.tokens_per_second = 200
    ws = await connect(alice)
    connected, _ = await ws.connect()
    assert connected
    await send(ws, {"type": "send", "conversation": None, "content": "Explain Euler's identity",
                    "reasoning_effort": "low", "client_id": "c1"})
    created = await receive(ws)
    assert created["type"] == "message.created" and created["client_id"] == "c1"
    frames = await receive_until(ws, "done", "error")
    deltas = [f for f in frames if f["type"] == "delta"]
    done = frames[-1]
    assert done["type"] == "done", done
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert len(deltas) > 1
    message = await sync_to_async(Message.objects.get)(pk=created["assistant_message"])
    assert message.status == Message.Status.DONE
    assert message.content == "".join(d["text"] for d in deltas)
    assert done["usage"]["completion_tokens"] == message.completion_tokens > 0
    assert done["cost_usd"] == str(message.cost_usd)
    body = [e for e in emulator.journal if e["body"] and e["body"].get("stream")][0]["body"]
    assert body["reasoning_effort"] == "low"
    assert body["messages"][0]["role"] == "developer"
    assert body["stream_options"] == {"include_usage": True}
    assert "temperature" not in body and "max_tokens" not in body
    await ws.disconnect()
