"""Share dialog, the "Shared links" page, and the read-only share page."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.members import get_membership
from accounts.models import Organization
from chatsite.ratelimits import over_limit
from conversations.access import get_conversation_for_user
from conversations.models import Conversation
from sharing.forms import SharePolicyForm, ShareSettingsForm
from sharing.links import (
    LinkNotFound,
    ShareRefused,
    change_link_settings,
    create_link,
    fork_destinations,
    fork_snapshot,
    get_link_for_owner,
    get_shared_snapshot,
    latest_finished_answer,
    live_link_for_conversation,
    revoke_link,
    set_share_policy,
    update_link,
)
from sharing.models import ShareLink

# Share pages hold other people's words: nothing runs but our own scripts, nothing
# loads from elsewhere, nothing frames them, and nothing is sent onwards.
SHARE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)


def _share_headers(response: HttpResponse, referrer_policy: str = "no-referrer") -> HttpResponse:
    # Set, not setdefault: the site-wide CSP and Referrer-Policy are looser.
    response.headers["Content-Security-Policy"] = SHARE_CSP
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["Referrer-Policy"] = referrer_policy
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _private_headers(response: HttpResponse) -> HttpResponse:
    """Owner pages that may show a link's address: never cached, never indexed. (They
    keep the site's same-origin Referrer-Policy: under no-referrer, browsers send
    ``Origin: null`` with form posts and Django's CSRF check rightly refuses them.)"""
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _too_many_lookups(request: HttpRequest) -> tuple[bool, int]:
    """Count one token lookup for the client, so tokens cannot be guessed in bulk.

    The client is REMOTE_ADDR, which uvicorn takes from X-Forwarded-For only for the
    proxies in TRUSTED_PROXIES; a request without one (a Unix socket) counts as one
    shared "unknown" client rather than failing.
    """
    key = "ip" if request.META.get("REMOTE_ADDR") else (lambda _group, _request: "unknown")
    return over_limit(
        request, group="sharing.lookup", rate=f"{settings.SHARE_LOOKUPS_PER_MINUTE}/m", key=key
    )


def share_page(
    referrer_policy: str = "no-referrer",
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Token views: rate limited per client, share headers on every answer.

    The session is read up front for every request, so that unknown, revoked and
    forbidden tokens all answer with the same ``Vary: Cookie`` and the same bytes.
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            request.user.is_authenticated  # noqa: B018 (touch the session, see above)
            limited, retry_after = _too_many_lookups(request)
            if limited:
                response = HttpResponse(
                    render_to_string("sharing/rate_limited.html"), status=429
                )
                response.headers["Retry-After"] = str(retry_after)
                return _share_headers(response, referrer_policy)
            return _share_headers(view(request, *args, **kwargs), referrer_policy)

        return wrapper

    return decorate


def _not_found() -> HttpResponse:
    # Rendered without the request: no user, CSRF token or anything else that could
    # make one "not found" differ from another.
    return HttpResponse(render_to_string("sharing/not_found.html"), status=404)


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


# --- The read-only share page ------------------------------------------------------------


@share_page()
@require_http_methods(["GET", "HEAD"])
def shared_conversation(request: HttpRequest, token: str) -> HttpResponse:
    try:
        snapshot = get_shared_snapshot(token=token, viewer=request.user, count_view=True)
    except LinkNotFound:
        return _not_found()
    organization = snapshot.link.organization
    models = sorted({m.model_name for m in snapshot.messages if m.model_name})
    return render(
        request,
        "sharing/shared_conversation.html",
        {
            "snapshot": snapshot,
            "shared_messages": snapshot.messages,
            "models": models,
            "time_zone": _zone(organization.time_zone),
            "payload": [{"role": m.role, "content": m.content} for m in snapshot.messages],
            "continue_url": reverse("sharing:continue", args=[token]),
        },
    )


# The share page itself sends no Referer at all, so a form on it would post with
# "Origin: null" and fail the CSRF check. "Continue in my account" is therefore a link
# to this confirmation page, which keeps the referrer same-origin and posts normally.
@share_page(referrer_policy="same-origin")
@require_http_methods(["GET", "POST"])
def continue_shared(request: HttpRequest, token: str) -> HttpResponse:
    """GET: confirm (and choose the org, for a public link); POST: copy the snapshot,
    open the copy. A members-only link offers, and copies into, only its own org."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.path)
    if request.method == "POST":
        try:
            conversation = fork_snapshot(
                token=token,
                viewer=request.user,  # type: ignore[arg-type]
                organization_id=_int_or_none(request.POST.get("organization"))
                or request.session.get("organization_id"),
            )
        except LinkNotFound:
            return _not_found()
        except ShareRefused as exc:
            return render(request, "sharing/refused.html", {"detail": exc.detail}, status=409)
        return redirect("conversations:detail", conversation_id=conversation.pk)
    try:
        snapshot = get_shared_snapshot(token=token, viewer=request.user)
    except LinkNotFound:
        return _not_found()
    memberships = fork_destinations(snapshot=snapshot, viewer=request.user)  # type: ignore[arg-type]
    current = request.session.get("organization_id")
    if not any(m.organization_id == current for m in memberships):
        current = memberships[0].organization_id if memberships else None
    return render(
        request,
        "sharing/continue.html",
        {
            "snapshot": snapshot,
            "org_choices": memberships,
            "current_org": current,
            "back_url": reverse("sharing:view", args=[token]),
        },
    )


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# --- The share dialog (owner) -----------------------------------------------------------


def _dialog(
    request: HttpRequest,
    conversation: Conversation,
    *,
    form: ShareSettingsForm | None = None,
    new_url: str = "",
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    organization = conversation.organization
    link = live_link_for_conversation(conversation)
    # The newest finished answer of the branch on screen: what "Update link" would share.
    answer = latest_finished_answer(conversation)
    newest = answer.pk if answer else None
    if form is None:
        form = ShareSettingsForm(organization=organization, link=link)
    context = {
        "conversation": conversation,
        "organization": organization,
        "link": link,
        "form": form,
        "new_url": new_url,
        "error": error,
        "has_answer": newest is not None,
        # Not just newer: another version chosen since is a change to share too.
        "newer_answers": bool(link and newest and newest != link.snapshot_message_id),
        "sharing_off": organization.share_policy == Organization.SharePolicy.OFF,
        "public_limited": bool(
            link
            and link.visibility == ShareLink.Visibility.PUBLIC
            and organization.share_policy == Organization.SharePolicy.ORG
        ),
    }
    return _private_headers(render(request, "sharing/dialog.html", context, status=status))


@login_required
@require_http_methods(["GET", "POST"])
def share_dialog(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """GET shows the dialog; POST creates a link (replacing a live one) and shows its
    address, the only time the address is ever sent."""
    conversation = get_conversation_for_user(request.user, conversation_id)  # type: ignore[arg-type]
    if request.method == "GET":
        return _dialog(request, conversation)
    form = ShareSettingsForm(
        request.POST,
        organization=conversation.organization,
        link=live_link_for_conversation(conversation),
    )
    if not form.is_valid():
        return _dialog(request, conversation, form=form, status=400)
    try:
        issued = create_link(
            user=request.user,  # type: ignore[arg-type]
            conversation_id=conversation.pk,
            visibility=form.cleaned_data["visibility"],
            expires_at=form.expires_at(),
        )
    except ShareRefused as exc:
        return _dialog(request, conversation, form=form, error=exc.detail, status=400)
    new_url = request.build_absolute_uri(reverse("sharing:view", args=[issued.token]))
    return _dialog(request, conversation, new_url=new_url)


def _change_view(
    request: HttpRequest, link_id: int, change: Callable[..., ShareLink], done: str
) -> HttpResponse:
    link = get_link_for_owner(request.user, link_id)  # type: ignore[arg-type]
    form = ShareSettingsForm(request.POST, organization=link.organization, link=link)
    if not form.is_valid():
        messages.error(request, "Choose who can open the link and when it expires.")
    else:
        try:
            change(
                user=request.user,  # type: ignore[arg-type]
                link_id=link.pk,
                visibility=form.cleaned_data["visibility"],
                expires_at=form.expires_at(),
            )
        except ShareRefused as exc:
            messages.error(request, exc.detail)
        else:
            messages.success(request, done)
    return redirect("sharing:dialog", conversation_id=link.conversation_id)


@login_required
@require_POST
def update_shared_link(request: HttpRequest, link_id: int) -> HttpResponse:
    return _change_view(
        request, link_id, update_link,
        "Link updated: it now shows the conversation up to its latest finished answer.",
    )


@login_required
@require_POST
def link_settings(request: HttpRequest, link_id: int) -> HttpResponse:
    return _change_view(request, link_id, change_link_settings, "Link settings saved.")


@login_required
@require_POST
def revoke_shared_link(request: HttpRequest, link_id: int) -> HttpResponse:
    revoke_link(user=request.user, link_id=link_id)  # type: ignore[arg-type]
    messages.success(request, "Link revoked. Anyone who opens it now sees “not found”.")
    next_url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return HttpResponseRedirect(next_url)
    return redirect("sharing:list")


# --- "Shared links" ---------------------------------------------------------------------


@dataclass(frozen=True)
class LinkRow:
    link: ShareLink
    who: str
    state: str
    own: bool


def _row(link: ShareLink, organization: Organization, user: Any) -> LinkRow:
    effective = link.effective_visibility(organization.share_policy)
    if effective is None:
        who, state = link.get_visibility_display(), "Paused: sharing is off"
    else:
        who = (
            "Anyone with the link"
            if effective == ShareLink.Visibility.PUBLIC
            else f"Members of {organization.name}"
        )
        if effective != link.visibility:
            who += " (org policy)"
        state = "Expired" if link.is_expired else "Active"
    return LinkRow(link=link, who=who, state=state, own=link.created_by_id == user.pk)


@login_required
@require_GET
def shared_links(request: HttpRequest) -> HttpResponse:
    membership = get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]
    organization = membership.organization
    links = (
        ShareLink.objects.live()
        .manageable_by(request.user, organization)  # type: ignore[arg-type]
        .select_related("created_by")
    )
    context = {
        "organization": organization,
        "membership": membership,
        "rows": [_row(link, organization, request.user) for link in links],
        "is_admin": membership.is_admin,
        "policy_form": (
            SharePolicyForm(initial={"policy": organization.share_policy})
            if membership.is_admin
            else None
        ),
    }
    return _private_headers(render(request, "sharing/shared_links.html", context))


@login_required
@require_POST
def sharing_policy(request: HttpRequest) -> HttpResponse:
    membership = get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]
    form = SharePolicyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a sharing policy from the list.")
        return redirect("sharing:list")
    organization = set_share_policy(
        user=request.user,  # type: ignore[arg-type]
        organization_id=membership.organization_id,
        policy=form.cleaned_data["policy"],
    )
    messages.success(
        request, f"Sharing policy for {organization.name}: {organization.get_share_policy_display()}."
    )
    return redirect("sharing:list")
