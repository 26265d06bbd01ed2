"""The websocket frames of the message tree: `send` with `parent`, `regenerate`, `select`."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.models import User
from conversations.models import Conversation, Message
from tests.conversations.wsclient import (
    counts,
    finish,
    open_socket,
    receive,
    receive_until,
    send,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@sync_to_async
def leaf_of(conversation_id: int) -> int | None:
    return Conversation.objects.get(pk=conversation_id).current_leaf_id


@sync_to_async
def parent_of(message_id: int) -> int | None:
    return Message.objects.get(pk=message_id).parent_id


async def turn(ws: WebsocketCommunicator, content: str, conversation: int | None = None,
               **extra: Any) -> dict[str, Any]:
    await send(ws, {"type": "send", "conversation": conversation, "content": content,
                    "reasoning_effort": "low", "client_id": content[:60], **extra})
    created = await receive(ws)
    assert created["type"] == "message.created", created
    return created


async def finished_turn(ws: WebsocketCommunicator, content: str, conversation: int | None = None,
                        **extra: Any) -> dict[str, Any]:
    created = await turn(ws, content, conversation, **extra)
    await finish(created["assistant_message"], f"answer to {content}")
    return created


@pytest.fixture
def slow_emulator(emulator: Any) -> Any:
    emulator.config.tokens_per_second = 200
    emulator.config.reply_tokens = 40
    return emulator


async def test_send_with_a_parent_branches_and_select_switches_back(alice: User) -> None:
    ws = await open_socket(alice)
    first = await finished_turn(ws, "q1")
    conversation = first["conversation"]
    second = await finished_turn(ws, "q2", conversation)

    edited = await finished_turn(ws, "q2 edited", conversation, parent=first["assistant_message"])
    assert await parent_of(edited["user_message"]) == first["assistant_message"]
    assert await leaf_of(conversation) == edited["assistant_message"]

    await send(ws, {"type": "select", "message": second["user_message"]})
    frame = await receive(ws)
    assert frame["type"] == "branch" and frame["conversation"] == conversation
    assert frame["leaf"] == second["assistant_message"]
    assert [m["content"] for m in frame["messages"]] == ["q1", "answer to q1", "q2", "answer to q2"]
    assert frame["messages"][2]["versions"] == {
        "index": 1, "count": 2, "ids": [second["user_message"], edited["user_message"]]
    }
    assert await leaf_of(conversation) == second["assistant_message"]
    await ws.disconnect()


async def test_a_null_parent_edits_the_first_question(alice: User) -> None:
    ws = await open_socket(alice)
    first = await finished_turn(ws, "q1")
    edited = await turn(ws, "q1 edited", first["conversation"], parent=None)
    assert await parent_of(edited["user_message"]) is None
    assert await parent_of(edited["assistant_message"]) == edited["user_message"]
    await ws.disconnect()


async def test_regenerate_streams_a_sibling_answer(alice: User, celery_worker: Any, slow_emulator: Any) -> None:
    ws = await open_socket(alice)
    first = await turn(ws, "q1")
    await receive_until(ws, "done")

    await send(ws, {"type": "regenerate", "message": first["assistant_message"],
                    "reasoning_effort": "high", "client_id": "again"})
    created = await receive(ws)
    assert created["type"] == "message.created"
    assert created["user_message"] == first["user_message"]
    assert created["client_id"] == "again" and created["reasoning_effort"] == "high"
    frames = await receive_until(ws, "done", "error")
    assert frames[-1]["type"] == "done", frames[-1]
    assert frames[-1]["message"] == created["assistant_message"]

    answer = await sync_to_async(Message.objects.get)(pk=created["assistant_message"])
    assert answer.parent_id == first["user_message"] and answer.status == Message.Status.DONE
    assert answer.content
    assert await leaf_of(first["conversation"]) == answer.pk
    await ws.disconnect()


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "regenerate", "message": "7"},
        {"type": "regenerate", "message": -1},
        {"type": "regenerate", "message": True},
        {"type": "regenerate"},
        {"type": "select", "message": None},
        {"type": "select", "message": [1]},
        {"type": "send", "conversation": None, "content": "hi", "parent": "1"},
        {"type": "send", "conversation": None, "content": "hi", "parent": 1.5},
    ],
)
async def test_malformed_tree_frames_are_refused_and_change_nothing(alice: User, frame: dict[str, Any]) -> None:
    ws = await open_socket(alice)
    before = await counts()
    await send(ws, frame)
    error = await receive(ws)
    assert error["type"] == "error" and error["code"] == "invalid_request", error
    assert await counts() == before
    # The socket stays usable.
    await send(ws, {"type": "select", "message": 10**15})
    assert (await receive(ws))["code"] == "forbidden"
    await ws.disconnect()


async def test_missing_ids_and_the_wrong_kind_of_message_are_forbidden(alice: User) -> None:
    ws = await open_socket(alice)
    first = await finished_turn(ws, "q1")
    before = await counts()
    for frame in (
        {"type": "regenerate", "message": 10**15},
        {"type": "regenerate", "message": first["user_message"]},  # a question, not an answer
        {"type": "select", "message": 10**15},
        {"type": "send", "conversation": first["conversation"], "content": "x", "parent": first["user_message"]},
        {"type": "send", "conversation": first["conversation"], "content": "x", "parent": 10**15},
    ):
        await send(ws, frame)
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "forbidden", (frame, error)
    assert await counts() == before
    await ws.disconnect()


@pytest.mark.parametrize("intruder", ["bob", "charlie"])
async def test_nobody_else_regenerates_selects_or_branches_in_alices_conversation(
    request: pytest.FixtureRequest, alice: User, intruder: str
) -> None:
    other: User = await sync_to_async(request.getfixturevalue)(intruder)
    mine = await open_socket(alice)
    first = await finished_turn(mine, "q1")
    second = await finished_turn(mine, "q2", first["conversation"])
    theirs = await open_socket(other)
    own = await finished_turn(theirs, "my own")
    before = await counts()

    for frame in (
        {"type": "regenerate", "message": second["assistant_message"], "reasoning_effort": "low"},
        {"type": "select", "message": first["user_message"]},
        {"type": "send", "conversation": first["conversation"], "content": "x",
         "parent": first["assistant_message"]},
        {"type": "send", "conversation": own["conversation"], "content": "x",
         "parent": first["assistant_message"]},
    ):
        await send(theirs, frame)
        error = await receive(theirs)
        assert error["type"] == "error" and error["code"] == "forbidden", (frame, error)
        assert "alice" not in error["detail"] and "q1" not in error["detail"]

    assert await counts() == before
    assert await leaf_of(first["conversation"]) == second["assistant_message"]
    assert await mine.receive_nothing(timeout=0.2)  # nothing leaked to her socket
    await mine.disconnect()
    await theirs.disconnect()


async def test_tree_frames_are_refused_while_an_answer_is_being_written(alice: User) -> None:
    ws = await open_socket(alice)
    first = await finished_turn(ws, "q1")
    live = await turn(ws, "q2", first["conversation"])  # no worker: it stays pending
    before = await counts()

    for frame in (
        {"type": "regenerate", "message": first["assistant_message"]},
        {"type": "select", "message": first["user_message"]},
        {"type": "send", "conversation": first["conversation"], "content": "x", "parent": None},
    ):
        await send(ws, frame)
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "invalid_request", (frame, error)
        assert "still being written" in error["detail"]

    assert await counts() == before
    assert await leaf_of(first["conversation"]) == live["assistant_message"]
    await ws.disconnect()
