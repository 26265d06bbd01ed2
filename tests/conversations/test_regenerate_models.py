"""Regenerate on another model: the `regenerate` frame's optional `profile`."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from accounts.models import Organization, User
from billing.models import Reservation
from conversations.models import Conversation, Message
from llm.models import ModelProfile
from tests.conversations.wsclient import (
    counts,
    finish,
    open_socket,
    receive,
    receive_until,
    send,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _copy_of_seed(**fields: Any) -> ModelProfile:
    seed = ModelProfile.objects.get(name="o3-mini")
    own = ("id", "origin", "catalog_key", "catalog_values", "listed_at")
    values = {f.name: getattr(seed, f.name) for f in ModelProfile._meta.fields if f.name not in own}
    values.update(fields)
    return ModelProfile.objects.create(**values)


@pytest.fixture
def sol(db: None) -> ModelProfile:
    """A second model the emulator serves, priced and capped unlike o3-mini."""
    return _copy_of_seed(
        name="sol", display_name="GPT-5.6 Sol", model="gpt-5.6-sol",
        reasoning_efforts=["minimal", "low", "medium", "high"], default_effort="low",
        max_completion_tokens=4000, max_completion_tokens_by_effort={},
        input_price=Decimal("2.00"), cached_input_price=Decimal("0.20"), output_price=Decimal("8.00"),
    )


@sync_to_async
def sol_for_charlies_org_only(org_a: Organization, charlie: User, sol: ModelProfile) -> None:
    """Org A may use o3-mini only; sol is enabled for charlie's org alone."""
    org_a.enabled_profiles.set([ModelProfile.objects.get(name="o3-mini")])
    charlie.memberships.get().organization.enabled_profiles.set([sol])


async def answered(ws: WebsocketCommunicator, content: str, *, worker: bool = False) -> dict[str, Any]:
    await send(ws, {"type": "send", "conversation": None, "content": content,
                    "reasoning_effort": "low", "client_id": "c1"})
    created = await receive(ws)
    assert created["type"] == "message.created", created
    if worker:
        assert (await receive_until(ws, "done", "error"))[-1]["type"] == "done"
    else:
        await finish(created["assistant_message"], f"answer to {content}")
    return created


async def test_regenerate_asks_another_model_for_that_answer_only(
    alice: User, sol: ModelProfile, celery_worker: Any, emulator: Any
) -> None:
    ws = await open_socket(alice)
    first = await answered(ws, "Which model are you? [regen-model]", worker=True)

    await send(ws, {"type": "regenerate", "message": first["assistant_message"],
                    "profile": "sol", "reasoning_effort": "minimal", "client_id": "r1"})
    created = await receive(ws)
    assert created["type"] == "message.created", created
    assert created["model"] == "GPT-5.6 Sol" and created["reasoning_effort"] == "minimal"
    assert created["user_message"] == first["user_message"]  # a sibling, no new question
    frames = await receive_until(ws, "done", "error")
    assert frames[-1]["type"] == "done", frames[-1]

    @sync_to_async
    def saved() -> tuple[Message, Reservation, Conversation]:
        answer = Message.objects.select_related("reservation").get(pk=created["assistant_message"])
        return answer, answer.reservation, Conversation.objects.select_related("profile").get(
            pk=first["conversation"])

    answer, reservation, conversation = await saved()
    assert answer.profile_id == sol.pk and answer.model_name == "gpt-5.6-sol"
    assert answer.parent_id == first["user_message"]
    assert answer.max_completion_tokens == 4000  # sol's cap, not o3-mini's 100,000
    assert {k: Decimal(v) for k, v in answer.price_snapshot.items()} == {
        "input": Decimal("2.00"), "cached_input": Decimal("0.20"), "output": Decimal("8.00")}
    # Settled at sol's prices: what the frame says is what was charged.
    assert reservation.settled_at is not None
    # Reserved for sol's worst case: its 4,000-token cap at $8/M, not o3-mini's 100,000 at $4.40/M.
    assert Decimal("0.032") <= reservation.amount_usd < Decimal("0.05")
    assert frames[-1]["cost_usd"] == f"{answer.cost_usd:.6f}"
    expected = sol.cost(prompt_tokens=answer.prompt_tokens, cached_tokens=answer.cached_tokens,
                        completion_tokens=answer.completion_tokens)
    assert answer.cost_usd == expected > 0
    # The provider was asked with sol's model id; the conversation keeps o3-mini. (The first
    # answer's title, asked of o3-mini meanwhile, may be the last request in the journal.)
    bodies = [e["body"] for e in emulator.journal if e["path"].endswith("/chat/completions")
              and "response_format" not in e["body"]]
    assert [(b["model"], b["reasoning_effort"]) for b in bodies] == [
        ("o3-mini", "low"), ("gpt-5.6-sol", "minimal")]
    assert conversation.profile.name == "o3-mini"
    await ws.disconnect()


async def test_a_retired_or_unknown_model_is_refused_and_nothing_is_saved(
    alice: User, sol: ModelProfile
) -> None:
    await sync_to_async(_copy_of_seed)(
        name="old-gateway", display_name="Old gateway model",
        provider=ModelProfile.Provider.COMPATIBLE, endpoint="http://127.0.0.1:9/v1",
        shutdown_date=timezone.localdate() - dt.timedelta(days=1),
    )
    ws = await open_socket(alice)
    first = await answered(ws, "q1")
    before = await counts()

    await send(ws, {"type": "regenerate", "message": first["assistant_message"], "profile": "old-gateway"})
    error = await receive(ws)
    assert error["type"] == "error" and error["code"] == "model_unavailable", error
    # Says what to use: the model a new conversation of the org gets.
    assert "retired" in error["detail"] and "Use o3-mini instead" in error["detail"]

    await send(ws, {"type": "regenerate", "message": first["assistant_message"], "profile": "no-such-model"})
    error = await receive(ws)
    assert error["code"] == "model_unavailable" and "not enabled" in error["detail"], error

    for bad in (5, ["sol"], "x" * 101):
        await send(ws, {"type": "regenerate", "message": first["assistant_message"], "profile": bad})
        error = await receive(ws)
        assert error["code"] == "invalid_request" and "'profile'" in error["detail"], (bad, error)

    # An effort the chosen model does not offer is refused too.
    await send(ws, {"type": "regenerate", "message": first["assistant_message"], "profile": "o3-mini",
                    "reasoning_effort": "minimal"})
    error = await receive(ws)
    assert error["code"] == "invalid_request" and "minimal" in error["detail"], error

    assert await counts() == before
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_a_model_only_another_org_may_use_is_refused(
    alice: User, org_a: Organization, charlie: User, sol: ModelProfile
) -> None:
    await sol_for_charlies_org_only(org_a, charlie, sol)
    ws = await open_socket(alice)
    first = await answered(ws, "q1")
    before = await counts()

    await send(ws, {"type": "regenerate", "message": first["assistant_message"], "profile": "sol"})
    error = await receive(ws)
    assert error["type"] == "error" and error["code"] == "model_unavailable", error
    assert "not enabled for your organization" in error["detail"]
    assert await counts() == before
    await ws.disconnect()


@pytest.mark.parametrize("intruder", ["bob", "charlie"])
async def test_nobody_else_regenerates_alices_answer_on_another_model(
    request: pytest.FixtureRequest, alice: User, sol: ModelProfile, intruder: str
) -> None:
    other: User = await sync_to_async(request.getfixturevalue)(intruder)
    mine = await open_socket(alice)
    first = await answered(mine, "q1 [private]")
    theirs = await open_socket(other)
    before = await counts()

    await send(theirs, {"type": "regenerate", "message": first["assistant_message"], "profile": "sol",
                        "reasoning_effort": "low"})
    error = await receive(theirs)
    assert error["type"] == "error" and error["code"] == "forbidden", error
    assert "private" not in error["detail"]
    assert await counts() == before
    assert await mine.receive_nothing(timeout=0.2)
    await mine.disconnect()
    await theirs.disconnect()


# --- A send that names another model: the conversation goes on with it ------------------------


async def test_a_send_naming_another_model_switches_the_conversation_to_it(
    alice: User, sol: ModelProfile, celery_worker: Any, emulator: Any
) -> None:
    ws = await open_socket(alice)
    first = await answered(ws, "Which model are you? [switch-model]", worker=True)

    await send(ws, {"type": "send", "conversation": first["conversation"], "profile": "sol",
                    "content": "And now? [switch-model]", "reasoning_effort": "minimal",
                    "client_id": "s2"})
    created = await receive(ws)
    assert created["type"] == "message.created", created
    assert created["model"] == "GPT-5.6 Sol"
    assert (await receive_until(ws, "done", "error"))[-1]["type"] == "done"

    @sync_to_async
    def saved() -> tuple[Message, Conversation]:
        return (Message.objects.get(pk=created["assistant_message"]),
                Conversation.objects.select_related("profile").get(pk=first["conversation"]))

    answer, conversation = await saved()
    assert (answer.profile_id, answer.model_name) == (sol.pk, "gpt-5.6-sol")
    assert conversation.profile == sol  # later sends go on with sol
    # The provider got the whole conversation, asked of sol. (The first answer's title,
    # asked of the title model meanwhile, may have been the last request.)
    body = next(e["body"] for e in reversed(emulator.journal)
                if e["path"].endswith("/chat/completions")
                and "And now? [switch-model]" in str(e["body"].get("messages")))
    assert body["model"] == "gpt-5.6-sol"
    assert [m["content"] for m in body["messages"] if m["role"] == "user"] == [
        "Which model are you? [switch-model]", "And now? [switch-model]"]

    # A plain send (no profile) stays on the conversation's model, now sol.
    await send(ws, {"type": "send", "conversation": first["conversation"], "content": "Third",
                    "reasoning_effort": "low", "client_id": "s3"})
    third = await receive(ws)
    assert third["model"] == "GPT-5.6 Sol", third
    await receive_until(ws, "done", "error")
    await ws.disconnect()


async def test_a_send_naming_a_model_the_org_may_not_use_is_refused_and_saves_nothing(
    alice: User, org_a: Organization, charlie: User, sol: ModelProfile
) -> None:
    await sol_for_charlies_org_only(org_a, charlie, sol)
    ws = await open_socket(alice)
    first = await answered(ws, "q1")
    before = await counts()
    for name, words in (("sol", "not enabled for your organization"),
                        ("no-such-model", "not enabled")):
        await send(ws, {"type": "send", "conversation": first["conversation"], "profile": name,
                        "content": "q2", "client_id": "s2"})
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "model_unavailable", error
        assert words in error["detail"]
    assert await counts() == before

    @sync_to_async
    def conversation_model() -> str:
        return Conversation.objects.get(pk=first["conversation"]).profile.name

    assert await conversation_model() == "o3-mini"
    await ws.disconnect()
