"""Org pages: Members and invitations. (The money pages of the org, Usage & budgets,
budget requests and notifications, are billing's: billing.views.)

Views parse input, fetch through one permission-checked function, call one domain
function and respond. A NotFound from any fetch escapes and is a 404
(``chatsite.middleware.NotFoundAs404Middleware``): an id from another org looks exactly
like an id that does not exist.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import invitations, members, onboarding
from accounts.models import Invitation, Membership
from accounts.org_forms import (
    AllowedDomainsForm,
    InvitationSignUpForm,
    InviteForm,
    MemberBudgetForm,
    RetentionForm,
    RoleForm,
    ZeroDataRetentionForm,
)
from chatsite.errors import NotFound
from chatsite.params import parse_id

NEW_INVITATION_KEY = "new_invitation"


def page_admin(request: HttpRequest) -> Membership:
    """The admin's membership in the org the page is about.

    ``?org=<id>`` names it exactly (links in notifications and emails carry it) and makes
    it the session's current org; otherwise the session's current org is used.
    """
    if "org" in request.GET:
        membership = members.get_own_membership(request.user, parse_id(request.GET["org"]), admin=True)  # type: ignore[arg-type]
        request.session["organization_id"] = membership.organization_id
        return membership
    membership = members.get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]
    if not membership.is_admin:
        raise NotFound("organization")
    return membership


def org_url(name: str, organization_id: int, **params: str) -> str:
    return f"{reverse(name)}?{urlencode({'org': organization_id, **params})}"


# --- Members ------------------------------------------------------------------------------


def _members_page(request: HttpRequest, admin: Membership, *, status: int = 200,
                  invite_form: InviteForm | None = None,
                  domains_form: AllowedDomainsForm | None = None,
                  conversation_retention_form: RetentionForm | None = None,
                  bound: dict[int, dict[str, Any]] | None = None, error: str = "") -> HttpResponse:
    organization = admin.organization
    rows = []
    for membership, spend in members.members_with_spend(organization):
        forms = (bound or {}).get(membership.pk, {})
        auto_id = f"id_m{membership.pk}_%s"
        rows.append({
            "membership": membership,
            "status": spend,
            "overridden": membership.monthly_budget_usd is not None,
            "is_self": membership.user_id == admin.user_id,
            "role_form": forms.get("role") or RoleForm(initial={"role": membership.role},
                                                       auto_id=auto_id),
            "budget_form": forms.get("budget") or MemberBudgetForm(
                initial={"monthly_budget_usd": membership.monthly_budget_usd}, auto_id=auto_id),
        })
    pending = (Invitation.objects.pending().filter(organization=organization)
               .select_related("invited_by"))
    new_invitation = request.session.pop(NEW_INVITATION_KEY, None) if status == 200 else None
    return render(request, "org/members.html", {
        "new_invitation": new_invitation,
        "domains_form": domains_form or AllowedDomainsForm(
            initial={"domains": "\n".join(onboarding.allowed_domains(organization))}),
        "admin": admin,
        "organization": organization,
        "rows": rows,
        "invite_form": invite_form or InviteForm(),
        "retention_form": ZeroDataRetentionForm(
            initial={"zero_data_retention": organization.zero_data_retention}),
        "conversation_retention_form": conversation_retention_form or RetentionForm(initial={
            "retention_days": organization.retention_days,
            "delete_shares": not organization.retention_keep_shares,
        }),
        "invitations": pending,
        "error": error,
        "section": "members",
    }, status=status)


@login_required
@require_GET
def members_page(request: HttpRequest) -> HttpResponse:
    return _members_page(request, page_admin(request))


@login_required
@require_POST
def invite(request: HttpRequest) -> HttpResponse:
    admin = page_admin(request)
    form = InviteForm(request.POST)
    if not form.is_valid():
        return _members_page(request, admin, status=400, invite_form=form)
    try:
        sent = invitations.invite(
            by=admin, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
        )
    except invitations.InvitationInvalid as exc:
        return _members_page(request, admin, status=exc.status, invite_form=form, error=exc.detail)
    _show_link_once(request, sent)
    return redirect(org_url("org:members", admin.organization_id))


def _show_link_once(request: HttpRequest, sent: invitations.SentInvitation) -> None:
    """The link exists only now (its hash is stored): the next Members page shows it once."""
    invitation = sent.invitation
    request.session[NEW_INVITATION_KEY] = {"email": invitation.email, "link": sent.link,
                                           "emailed": sent.emailed}
    if sent.emailed:
        messages.success(request, f"Invitation sent to {invitation.email}. The link works once "
                                  f"and expires on {invitation.expires_at:%-d %b}.")
    else:
        messages.warning(request, f"The invitation email to {invitation.email} could not be "
                                  "sent. Copy the link below and send it yourself.")


@login_required
@require_POST
def resend_invitation(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = invitations.get_invitation_for_admin(request.user, invitation_id)  # type: ignore[arg-type]
    admin = members.acting_membership(user=request.user, organization=invitation.organization)  # type: ignore[arg-type]
    try:
        sent = invitations.resend_invitation(by=admin, invitation=invitation)
    except invitations.InvitationInvalid as exc:
        return _members_page(request, admin, status=exc.status, error=exc.detail)
    _show_link_once(request, sent)
    return redirect(org_url("org:members", invitation.organization_id))


@login_required
@require_POST
def allowed_domains(request: HttpRequest) -> HttpResponse:
    admin = page_admin(request)
    form = AllowedDomainsForm(request.POST)
    if not form.is_valid():
        return _members_page(request, admin, status=400, domains_form=form)
    try:
        domains = onboarding.set_allowed_domains(
            by=admin, domains=onboarding.parse_domains(form.cleaned_data["domains"]))
    except onboarding.DomainRefused as exc:
        form.add_error("domains", str(exc))
        return _members_page(request, admin, status=400, domains_form=form)
    messages.success(request, f"People at {', '.join(domains)} may now join as members."
                     if domains else "Only invited people can join now.")
    return redirect(org_url("org:members", admin.organization_id))


@login_required
@require_POST
def zero_data_retention(request: HttpRequest) -> HttpResponse:
    admin = page_admin(request)
    form = ZeroDataRetentionForm(request.POST)
    form.is_valid()  # an unchecked box is off: the form cannot be invalid
    enabled = bool(form.cleaned_data.get("zero_data_retention"))
    members.set_zero_data_retention(by=admin, enabled=enabled)
    messages.success(request, "Zero Data Retention is on: answers are no longer stored at the "
                     "provider." if enabled else "Zero Data Retention is off: long answers are "
                     "stored at the provider while they run, so they can resume after a restart.")
    return redirect(org_url("org:members", admin.organization_id))


@login_required
@require_POST
def retention(request: HttpRequest) -> HttpResponse:
    admin = page_admin(request)
    form = RetentionForm(request.POST)
    if not form.is_valid():
        return _members_page(request, admin, status=400, conversation_retention_form=form)
    days = form.cleaned_data["retention_days"]
    keep_shares = not form.cleaned_data["delete_shares"]
    try:
        members.set_retention(by=admin, days=days, keep_shares=keep_shares)
    except members.MemberChangeRefused as exc:
        form.add_error("retention_days", str(exc))
        return _members_page(request, admin, status=400, conversation_retention_form=form)
    if days is None:
        messages.success(request, "Retention is off: conversations are kept until their owners "
                         "delete them.")
    else:
        shares = ("their share links keep working" if keep_shares
                  else "their share links are deleted with them")
        messages.success(request, f"Retention is on: every day, conversations untouched for "
                         f"{days} day{'s' if days != 1 else ''} are deleted, and {shares}.")
    return redirect(org_url("org:members", admin.organization_id))


@login_required
@require_POST
def revoke_invitation(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = invitations.get_invitation_for_admin(request.user, invitation_id)  # type: ignore[arg-type]
    admin = members.acting_membership(user=request.user, organization=invitation.organization)  # type: ignore[arg-type]
    if invitations.revoke_invitation(by=admin, invitation=invitation):
        messages.success(request, f"The invitation for {invitation.email} no longer works.")
    else:
        messages.info(request, f"The invitation for {invitation.email} was already used, "
                               "withdrawn or expired.")
    return redirect(org_url("org:members", invitation.organization_id))


def _member_action(request: HttpRequest, membership_id: int) -> tuple[Membership, Membership]:
    target = members.get_member_for_admin(request.user, membership_id)  # type: ignore[arg-type]
    admin = members.acting_membership(user=request.user, organization=target.organization)  # type: ignore[arg-type]
    return admin, target


@login_required
@require_POST
def change_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    admin, target = _member_action(request, membership_id)
    form = RoleForm(request.POST, auto_id=f"id_m{target.pk}_%s")
    if not form.is_valid():
        return _members_page(request, admin, status=400, bound={target.pk: {"role": form}},
                             error=f"The role of {target.user} was not changed.")
    try:
        members.change_role(by=admin, target=target, role=form.cleaned_data["role"])
    except members.MemberChangeRefused as exc:
        return _members_page(request, admin, status=400, error=str(exc))
    messages.success(request, f"{target.user} is now {target.get_role_display().lower()}.")
    return redirect(org_url("org:members", admin.organization_id))


@login_required
@require_POST
def member_budget(request: HttpRequest, membership_id: int) -> HttpResponse:
    admin, target = _member_action(request, membership_id)
    form = MemberBudgetForm(request.POST, auto_id=f"id_m{target.pk}_%s")
    if not form.is_valid():
        return _members_page(request, admin, status=400, bound={target.pk: {"budget": form}},
                             error=f"The budget of {target.user} was not changed.")
    amount = form.cleaned_data["monthly_budget_usd"]
    try:
        members.set_member_budget(by=admin, target=target, amount=amount)
    except members.MemberChangeRefused as exc:
        return _members_page(request, admin, status=400, error=str(exc))
    what = "the org's member budget" if amount is None else f"${amount:,.2f} a month"
    messages.success(request, f"{target.user}'s budget is now {what}.")
    return redirect(org_url("org:members", admin.organization_id))


@login_required
@require_POST
def remove_member(request: HttpRequest, membership_id: int) -> HttpResponse:
    admin, target = _member_action(request, membership_id)
    try:
        members.remove_member(by=admin, target=target)
    except members.MemberChangeRefused as exc:
        return _members_page(request, admin, status=400, error=str(exc))
    messages.success(request, f"{target.user} is no longer a member of {target.organization}.")
    if target.user_id == request.user.pk:  # they removed themselves: no org page to go back to
        return redirect("conversations:home")
    return redirect(org_url("org:members", admin.organization_id))


# --- Invitations --------------------------------------------------------------------------


def _invitation_page(request: HttpRequest, token: str, *, status: int = 200,
                     form: InvitationSignUpForm | None = None, error: str = "") -> HttpResponse:
    try:
        invitation = invitations.find_invitation(token)
    except invitations.InvitationInvalid as exc:
        response = render(request, "org/invitation_invalid.html", {"error": exc.detail},
                          status=exc.status)
    else:
        signed_in_elsewhere = ""
        if request.user.is_authenticated:
            try:
                invitations.check_address(invitation, request.user)  # type: ignore[arg-type]
            except invitations.InvitationInvalid as exc:
                signed_in_elsewhere = exc.detail
        response = render(request, "org/invitation.html", {
            "invitation": invitation,
            "organization": invitation.organization,
            "form": form or InvitationSignUpForm(initial={"email": invitation.email}),
            "has_account": invitations.has_account(invitation),
            "login_url": f"{reverse('accounts:login')}?{urlencode({'next': request.path})}",
            "error": error or signed_in_elsewhere,
            "can_accept": not signed_in_elsewhere,
        }, status=status)
    # The token is in the URL: keep it out of Referer headers to other sites. Not
    # "no-referrer": under it browsers post this page's own forms with "Origin: null",
    # which CSRF protection rightly refuses, and nobody could accept an invitation.
    response["Referrer-Policy"] = "same-origin"
    return response


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """Accept an invitation: signed in, by one click; signed out, by signing up with the
    invited address (or following the link to sign in first)."""
    if request.method == "GET":
        return _invitation_page(request, token)
    form = None
    try:
        if request.user.is_authenticated:
            membership = invitations.accept_invitation(token=token, user=request.user)  # type: ignore[arg-type]
        else:
            form = InvitationSignUpForm(request.POST)
            if not form.is_valid():
                return _invitation_page(request, token, status=400, form=form)
            membership = invitations.sign_up_with_invitation(
                token=token, password=form.cleaned_data["password"]
            )
            login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
    except invitations.InvitationInvalid as exc:
        return _invitation_page(request, token, status=exc.status, form=form, error=exc.detail)
    request.session["organization_id"] = membership.organization_id
    messages.success(request, f"Welcome to {membership.organization}.")
    return redirect("conversations:home")
