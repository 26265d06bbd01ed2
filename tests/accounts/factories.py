"""Bulk data for org and usage tests: conversations and finished answers with a cost."""

from __future__ import annotations

import datetime as dt
import importlib
from decimal import Decimal
from typing import Any

from django.utils import timezone

from accounts.models import Membership, Organization, User
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
                content: str = "The secret plan is to ship on Friday.") -> Message:
    return Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=status,
        content=content, profile=conversation.profile,
        model_name=model_name or conversation.profile.model, reasoning_effort=effort,
        prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion,
        reasoning_tokens=reasoning, cost_usd=Decimal(cost), created_at=when or timezone.now(),
    )


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
    Message.objects.bulk_create([
        Message(conversation=conversation, role=Message.Role.ASSISTANT, profile=profile,
                model_name=profile.model, reasoning_effort="medium", prompt_tokens=1000,
                completion_tokens=500, reasoning_tokens=300, cost_usd=Decimal("0.01"))
        for conversation in conversations for _ in range(answers_each)
    ])
    return users


def as_text(response: Any) -> str:
    return response.content.decode()


def reseed_model_profiles() -> None:
    """Put back the profile a data migration seeds: a transactional test's closing flush
    empties every table, and later tests (``o3_mini``) expect it."""
    seed = importlib.import_module("conversations.migrations.0002_seed_o3_mini").O3_MINI
    ModelProfile.objects.get_or_create(name=seed["name"], defaults=seed)
