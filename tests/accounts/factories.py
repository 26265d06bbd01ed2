"""Bulk data for org and usage tests: conversations and finished answers with a cost,
each with the billing ledger row a real turn leaves (the usage report and the estimates
read only the ledger)."""

from __future__ import annotations

import datetime as dt
import importlib
from decimal import Decimal
from typing import Any

from django.utils import timezone

from accounts.models import Membership, Organization, User
from billing.models import Reservation, UsagePeriod
from billing.quotas import period_start
from conversations.models import Conversation, Message
from llm.models import ModelProfile


def conversation_for(user: User, organization: Organization,
                     profile: ModelProfile | None = None) -> Conversation:
    profile = profile or ModelProfile.objects.get(name="o3-mini")
    return Conversation.objects.create(user=user, organization=organization, profile=profile,
                                       title="Quarterly plan")


def make_answer(conversation: Conversation, *, cost: str = "0.01", prompt: int = 1000,
                cached: int = 0, completion: int = 500, reasoning: int = 300,
                when: dt.datetime | None = None, effort: str = "medium",
                status: str = Message.Status.DONE, model_name: str = "",
                content: str = "The secret plan is to ship on Friday.",
                billed: bool = True) -> Message:
    """A finished answer; ``billed``: with its ledger row, as a real turn leaves it."""
    message = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=status,
        content=content, profile=conversation.profile,
        model_name=model_name or conversation.profile.model, reasoning_effort=effort,
        prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion,
        reasoning_tokens=reasoning, cost_usd=Decimal(cost), created_at=when or timezone.now(),
    )
    if billed:
        bill(message)
    return message


def bill(*messages: Message) -> list[Reservation]:
    """The settled ledger rows of saved answers, as their turns would have left them: on
    the org's usage row of the answer's month (made if missing, nothing spent on it)."""
    conversations = Conversation.objects.select_related("organization").in_bulk(
        {message.conversation_id for message in messages})
    rows: dict[tuple[int, Any], UsagePeriod] = {}
    ledger = []
    for message in messages:
        conversation = conversations[message.conversation_id]
        organization = conversation.organization
        start = period_start(organization, message.created_at)
        if (organization.pk, start) not in rows:
            rows[organization.pk, start] = UsagePeriod.objects.get_or_create(
                organization=organization, user=None, period_start=start)[0]
        final = message.status in Message.FINAL_STATUSES
        ledger.append(Reservation(
            message=message, org_period=rows[organization.pk, start],
            user_id=conversation.user_id, profile_id=message.profile_id,
            model_name=message.model_name, reasoning_effort=message.reasoning_effort,
            prompt_tokens=message.prompt_tokens, cached_tokens=message.cached_tokens,
            cache_write_tokens=message.cache_write_tokens,
            completion_tokens=message.completion_tokens,
            reasoning_tokens=message.reasoning_tokens, amount_usd=message.cost_usd,
            charged_usd=message.cost_usd if final else None, cost_usd=message.cost_usd,
            outcome=message.status if final else "", created_at=message.created_at,
            settled_at=message.created_at if final else None,
        ))
    return Reservation.objects.bulk_create(ledger)


def add_members(organization: Organization, count: int, *, answers_each: int = 1,
                prefix: str = "member") -> list[User]:
    """``count`` members, each with a conversation and ``answers_each`` answers today.

    Bulk inserts and no password hashing, so 30 members cost a handful of queries."""
    users = User.objects.bulk_create(
        [User(email=f"{prefix}{index}@example.com", password="!") for index in range(count)]
    )
    Membership.objects.bulk_create(
        [Membership(user=user, organization=organization) for user in users]
    )
    profile = ModelProfile.objects.get(name="o3-mini")
    conversations = Conversation.objects.bulk_create(
        [Conversation(user=user, organization=organization, profile=profile) for user in users]
    )
    bill(*Message.objects.bulk_create([
        Message(conversation=conversation, role=Message.Role.ASSISTANT, profile=profile,
                model_name=profile.model, reasoning_effort="medium", prompt_tokens=1000,
                completion_tokens=500, reasoning_tokens=300, cost_usd=Decimal("0.01"))
        for conversation in conversations for _ in range(answers_each)
    ]))
    return users


def as_text(response: Any) -> str:
    return response.content.decode()


def reseed_model_profiles() -> None:
    """Put back the profile a data migration seeds: a transactional test's closing flush
    empties every table, and later tests (``o3_mini``) expect it."""
    seed = importlib.import_module("conversations.migrations.0002_seed_o3_mini").O3_MINI
    ModelProfile.objects.get_or_create(name=seed["name"], defaults=seed)
