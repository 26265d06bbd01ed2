"""Factories and fixtures for the sharing tests (the cast comes from tests/conftest.py)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Organization, User
from conversations.models import Conversation, Message
from llm.models import ModelProfile

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def generous_lookup_limit(settings: Any) -> None:
    """Tests share one client address; only the rate-limit tests lower this."""
    settings.SHARE_LOOKUPS_PER_MINUTE = 1_000_000


def seeded_profile() -> ModelProfile:
    """The o3-mini seed profile, restored if a transactional test flushed it."""
    seed = importlib.import_module("conversations.migrations.0002_seed_o3_mini").O3_MINI
    profile, _ = ModelProfile.objects.get_or_create(name=seed["name"], defaults=seed)
    return profile


def make_conversation(
    user: User,
    turns: Sequence[tuple[str, str]] = (("What is 2 + 2?", "**4**"),),
    *,
    title: str = "Arithmetic",
    organization: Organization | None = None,
    custom_instructions: str = "",
) -> Conversation:
    """A conversation of finished turns: each (question, answer) is a user message and a
    done assistant message, in order."""
    organization = organization or user.memberships.get().organization
    profile = seeded_profile()
    conversation = Conversation.objects.create(
        organization=organization,
        user=user,
        profile=profile,
        title=title,
        custom_instructions=custom_instructions,
    )
    for question, answer in turns:
        add_turn(conversation, question, answer)
    return conversation


def add_turn(
    conversation: Conversation,
    question: str,
    answer: str,
    *,
    status: str = Message.Status.DONE,
    **assistant_fields: Any,
) -> tuple[Message, Message]:
    now = timezone.now()
    # The turn goes on the branch on screen, as a send would put it.
    asked = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=question, created_at=now,
        parent_id=conversation.current_leaf_id,
    )
    answered = Message.objects.create(
        conversation=conversation,
        parent=asked,
        role=Message.Role.ASSISTANT,
        content=answer,
        status=status,
        model_name="o3-mini",
        reasoning_effort="medium",
        created_at=now + timedelta(microseconds=1),
        **assistant_fields,
    )
    conversation.current_leaf = answered
    conversation.save(update_fields=["current_leaf"])
    return asked, answered


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def as_user() -> Callable[[User | None], Client]:
    return client_for


@pytest.fixture
def share_site_url(live_server_url: str) -> str:
    """The real ASGI app (uvicorn + Celery worker + emulator) for browser tests."""
    return live_server_url
