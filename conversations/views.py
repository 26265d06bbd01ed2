from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.model_access import default_profile, enabled_profiles
from chatsite.errors import NotFound
from conversations.access import get_conversation_for_user, get_membership
from conversations.listing import list_conversations
from conversations.models import Conversation
from conversations.transcript import transcript
from llm.catalog.sync import ensure_synced
from llm.client import is_demo_mode
from llm.profiles import admin_warnings, is_retired


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
    enabled = list(enabled_profiles(conversation.organization if conversation else organization,
                                    user=request.user))  # type: ignore[arg-type]
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
    conversation = get_conversation_for_user(request.user, conversation_id)  # type: ignore[arg-type]
    if conversation.organization_id != request.session.get("organization_id"):
        request.session["organization_id"] = conversation.organization_id
    return _chat_page(request, conversation)


@login_required
@require_POST
def update_instructions(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, conversation_id)  # type: ignore[arg-type]
    form = InstructionsForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    conversation.custom_instructions = form.cleaned_data["custom_instructions"]
    conversation.save(update_fields=["custom_instructions"])
    if request.headers.get("Accept") == "application/json":
        return JsonResponse({"custom_instructions": conversation.custom_instructions})
    return redirect("conversations:detail", conversation_id=conversation.pk)
