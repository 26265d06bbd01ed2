"""JSON endpoints of the conversation list and search: parse, call one domain function,
answer. Another person's id is a 404, bad input a 400 with a sentence to show."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from chatsite.errors import NotFound
from conversations import listing
from conversations.search import MAX_QUERY_CHARS, BadQuery, search_conversations

View = Callable[..., JsonResponse]


def _json_errors(view: View) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound:
            return JsonResponse({"error": "No such conversation, or it is not yours."}, status=404)
        except (listing.ListingError, BadQuery) as exc:
            return JsonResponse({"error": str(exc)}, status=400)

    return wrapper


def _flag(request: HttpRequest, name: str) -> bool:
    value = request.POST.get(name, "")
    if value not in ("true", "false"):
        raise listing.ListingError(f"Send {name}=true or {name}=false.")
    return value == "true"


def _state(conversation: Any) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "title": conversation.display_title,
        "pinned": conversation.pinned_at is not None,
        "archived": conversation.archived_at is not None,
    }


@login_required
@require_GET
@_json_errors
def conversation_list(request: HttpRequest) -> JsonResponse:
    cursor = request.GET.get("cursor") or None
    if cursor is not None and len(cursor) > 80:
        raise listing.ListingError("That page of the list does not exist. Reload the page.")
    page = listing.list_conversations(
        user=request.user,  # type: ignore[arg-type]
        organization_id=request.session.get("organization_id"),
        archived=request.GET.get("archived") == "1",
        cursor=cursor,
    )
    return JsonResponse(page.as_dict())


@login_required
@require_GET
@_json_errors
def search(request: HttpRequest) -> JsonResponse:
    query = request.GET.get("q", "")
    if len(query) > MAX_QUERY_CHARS * 4:  # refuse before any normalising work
        raise BadQuery(f"Searches are limited to {MAX_QUERY_CHARS} characters. Use fewer words.")
    hits = search_conversations(
        user=request.user,  # type: ignore[arg-type]
        organization_id=request.session.get("organization_id"),
        query=query,
    )
    return JsonResponse({"results": [hit.as_dict() for hit in hits]})


@login_required
@require_POST
@_json_errors
def rename(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conversation = listing.rename_conversation(
        user=request.user, conversation_id=conversation_id,  # type: ignore[arg-type]
        title=request.POST.get("title", ""),
    )
    return JsonResponse(_state(conversation))


@login_required
@require_POST
@_json_errors
def pin(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conversation = listing.set_pinned(
        user=request.user, conversation_id=conversation_id,  # type: ignore[arg-type]
        pinned=_flag(request, "pinned"),
    )
    return JsonResponse(_state(conversation))


@login_required
@require_POST
@_json_errors
def archive(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conversation = listing.set_archived(
        user=request.user, conversation_id=conversation_id,  # type: ignore[arg-type]
        archived=_flag(request, "archived"),
    )
    return JsonResponse(_state(conversation))


@login_required
@require_POST
@_json_errors
def delete(request: HttpRequest, conversation_id: int) -> JsonResponse:
    listing.delete_conversation(user=request.user, conversation_id=conversation_id)  # type: ignore[arg-type]
    return JsonResponse({"id": conversation_id, "deleted": True})
