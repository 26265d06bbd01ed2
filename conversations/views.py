from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from answers.prompts import estimate_prompt_tokens
from billing.estimates import estimate_turn_costs
from billing.quotas import budget_status
from chatsite.errors import NotFound
from chatsite.params import parse_id
from conversations.access import get_conversation_for_user, get_membership
from conversations.listing import list_conversations
from conversations.models import Conversation
from conversations.transcript import transcript
from llm.catalog.sync import ensure_synced
from llm.client import is_demo_mode
from llm.profiles import admin_warnings, default_profile, enabled_profiles, is_retired


class InstructionsForm(forms.Form):
    custom_instructions = forms.CharField(
        label="Custom instructions", required=False, max_length=8000, widget=forms.Textarea
    )


def _profile_state(profile: Any) -> dict[str, Any] | None:
    if profile is None:
        return None
    return {
        "name": profile.name,
        "display_name": profile.display_name,
        "efforts": profile.offered_efforts(),
        "default_effort": profile.default_effort,
        "retired": is_retired(profile),
        "shutdown_date": profile.shutdown_date.isoformat() if profile.shutdown_date else None,
    }


def _chat_page(request: HttpRequest, conversation: Conversation | None) -> HttpResponse:
    membership = get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]
    organization = membership.organization
    # The first page of the sidebar list, rendered by static/js/sidebar.js.
    conversation_list = list_conversations(
        user=request.user, organization_id=organization.pk  # type: ignore[arg-type]
    ).as_dict()
    ensure_synced()  # the first sync may create the profiles listed below
    # An open conversation goes on with its own org's models (start_turn decides alike).
    enabled = list(enabled_profiles(conversation.organization if conversation else organization))
    profile = conversation.profile if conversation else default_profile(organization, enabled)
    profiles = [_profile_state(p) for p in enabled]
    state = {
        "is_admin": membership.is_admin,
        "admin_warnings": [w for p in enabled for w in admin_warnings(p)]
        if membership.is_admin else [],
        "conversation": conversation.pk if conversation else None,
        # Only the branch on screen; other versions are one "‹ 1 / 2 ›" away.
        "messages": transcript(conversation) if conversation else [],
        "profile": _profile_state(profile),
        "profiles": profiles,
        "max_chars": settings.MAX_MESSAGE_CHARS,
    }
    return render(
        request,
        "conversations/chat.html",
        {
            "conversation": conversation,
            "conversation_list": conversation_list,
            "organization": organization,
            "membership": membership,
            "memberships": request.user.memberships.select_related("organization"),  # type: ignore[union-attr,misc]
            "demo_mode": is_demo_mode(),
            "state": state,
            "instructions_form": InstructionsForm(
                initial={"custom_instructions": conversation.custom_instructions if conversation else ""}
            ),
        },
    )


@login_required
def home(request: HttpRequest) -> HttpResponse:
    try:
        return _chat_page(request, None)
    except NotFound:
        # Signed in but in no org (removed from the last one): say what to do, not 500.
        return render(request, "accounts/no_organization.html")


@login_required
def conversation_detail(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        conversation = get_conversation_for_user(request.user, conversation_id)  # type: ignore[arg-type]
    except NotFound as exc:
        raise Http404("No such conversation") from exc
    if conversation.organization_id != request.session.get("organization_id"):
        request.session["organization_id"] = conversation.organization_id
    return _chat_page(request, conversation)


@login_required
@require_POST
def update_instructions(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        conversation = get_conversation_for_user(request.user, conversation_id)  # type: ignore[arg-type]
    except NotFound as exc:
        raise Http404("No such conversation") from exc
    form = InstructionsForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    conversation.custom_instructions = form.cleaned_data["custom_instructions"]
    conversation.save(update_fields=["custom_instructions"])
    if request.headers.get("Accept") == "application/json":
        return JsonResponse({"custom_instructions": conversation.custom_instructions})
    return redirect("conversations:detail", conversation_id=conversation.pk)


# /healthz publishes to this group, which no consumer joins.
HEALTHZ_GROUP = "healthz"
HEALTHZ_TIMEOUT_SECONDS = 5


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()
    return "ok"


def _check_broker() -> str:
    """Ping the broker over a connection from Celery's pool.

    Monitoring calls /healthz every few seconds: a connection of its own per call
    (connection_for_write) opened and closed a Redis client every time.
    """
    from chatsite.celery import app

    with app.pool.acquire(block=True, timeout=2) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        client = getattr(conn.default_channel, "client", None)
        if client is not None:  # Redis: prove the pooled connection still answers
            client.ping()
    return "ok"


async def _check_channel_layer() -> str:
    """Publish to a group no consumer joins: it reaches Redis through the layer's
    own connection and subscribes to nothing. (A round trip through a new channel
    left one pub/sub subscription behind per call: the layer unsubscribes only when
    a receive is cancelled.)"""
    layer = get_channel_layer()
    if layer is None:
        return "missing"
    await layer.group_send(HEALTHZ_GROUP, {"type": "healthz"})
    return "ok"


async def healthz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    for name, check in (
        ("database", sync_to_async(_check_database)),
        ("channel_layer", _check_channel_layer),
        ("broker", sync_to_async(_check_broker)),
    ):
        try:
            # Bounded: a hung Redis or database must not hang the monitor's request.
            checks[name] = await asyncio.wait_for(check(), timeout=HEALTHZ_TIMEOUT_SECONDS)
        except Exception as exc:  # report, never raise: this is what monitoring reads
            checks[name] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", **checks,
         "mode": "embedded" if settings.EMBEDDED else "full"},
        status=200 if healthy else 503,
    )


@login_required
def budget(request: HttpRequest) -> JsonResponse:
    """The member's budget meter and the estimated cost of the next turn per effort."""
    membership = get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]
    organization = membership.organization
    conversation = None
    conversation_id = parse_id(request.GET.get("conversation"))
    if conversation_id is not None:
        try:
            conversation = get_conversation_for_user(request.user, conversation_id)  # type: ignore[arg-type]
        except NotFound as exc:
            raise Http404("No such conversation") from exc
    profile = conversation.profile if conversation else default_profile(organization)
    estimates = {}
    if profile is not None:
        prompt_tokens = estimate_prompt_tokens(
            conversation_id=conversation.pk if conversation else None, content="",
            profile=profile, org_message=organization.developer_message,
            custom=conversation.custom_instructions if conversation else "",
            completion_cap=profile.max_completion_tokens,
        )
        estimates = estimate_turn_costs(organization=organization, profile=profile,
                                        prompt_tokens=prompt_tokens)
    return JsonResponse({
        "budget": {name: status.as_dict() for name, status in budget_status(membership).items()},
        "estimates": estimates,
    })
