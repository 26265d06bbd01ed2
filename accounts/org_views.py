"""Org pages: Members, Usage & budgets, invitations, budget requests, notifications.

Views parse input, fetch through one permission-checked function, call one domain
function and respond. A NotFound from any fetch is a 404: an id from another org looks
exactly like an id that does not exist.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import invitations, members, onboarding
from accounts.models import Invitation, Membership
from accounts.org_forms import (
    AllowedDomainsForm,
    ApproveForm,
    BudgetRequestForm,
    InvitationSignUpForm,
    InviteForm,
    MemberBudgetForm,
    OrgBudgetForm,
    RoleForm,
    ZeroDataRetentionForm,
)
from billing import inbox, requests, usage
from billing.estimates import estimate_turn_costs
from billing.quotas import budget_status, member_limit, period_start
from chatsite.errors import NotFound
from chatsite.params import parse_id
from conversations.access import get_membership
from llm.models import ModelProfile
from llm.profiles import enabled_profiles

View = Callable[..., HttpResponse]
NEW_INVITATION_KEY = "new_invitation"


def _not_found_as_404(view: View) -> View:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.detail) from exc

    return wrapper


def _int(value: Any) -> int | None:
    return parse_id(value)


def _page_admin(request: HttpRequest) -> Membership:
    """The admin's membership in the org the page is about.

    ``?org=<id>`` names it exactly (links in notifications and emails carry it) and makes
    it the session's current org; otherwise the session's current org is used.
    """
    if "org" in request.GET:
        membership = members.get_own_membership(request.user, _int(request.GET["org"]), admin=True)  # type: ignore[arg-type]
        request.session["organization_id"] = membership.organization_id
        return membership
    membership = get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]
    if not membership.is_admin:
        raise NotFound("organization")
    return membership


def _org_url(name: str, organization_id: int, **params: str) -> str:
    return f"{reverse(name)}?{urlencode({'org': organization_id, **params})}"


# --- Members ------------------------------------------------------------------------------


def _members_page(request: HttpRequest, admin: Membership, *, status: int = 200,
                  invite_form: InviteForm | None = None,
                  domains_form: AllowedDomainsForm | None = None,
                  bound: dict[int, dict[str, Any]] | None = None, error: str = "") -> HttpResponse:
    organization = admin.organization
    _, member_budgets = usage.budget_overview(organization=organization,
                                              period=period_start(organization))
    rows = []
    for item in member_budgets:
        membership = item.membership
        forms = (bound or {}).get(membership.pk, {})
        auto_id = f"id_m{membership.pk}_%s"
        rows.append({
            "membership": membership,
            "status": item.status,
            "overridden": item.overridden,
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
        "invitations": pending,
        "error": error,
        "section": "members",
    }, status=status)


@login_required
@require_GET
@_not_found_as_404
def members_page(request: HttpRequest) -> HttpResponse:
    return _members_page(request, _page_admin(request))


@login_required
@require_POST
@_not_found_as_404
def invite(request: HttpRequest) -> HttpResponse:
    admin = _page_admin(request)
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
    return redirect(_org_url("org:members", admin.organization_id))


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
@_not_found_as_404
def resend_invitation(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = invitations.get_invitation_for_admin(request.user, invitation_id)  # type: ignore[arg-type]
    admin = members.acting_membership(user=request.user, organization=invitation.organization)  # type: ignore[arg-type]
    try:
        sent = invitations.resend_invitation(by=admin, invitation=invitation)
    except invitations.InvitationInvalid as exc:
        return _members_page(request, admin, status=exc.status, error=exc.detail)
    _show_link_once(request, sent)
    return redirect(_org_url("org:members", invitation.organization_id))


@login_required
@require_POST
@_not_found_as_404
def allowed_domains(request: HttpRequest) -> HttpResponse:
    admin = _page_admin(request)
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
    return redirect(_org_url("org:members", admin.organization_id))


@login_required
@require_POST
@_not_found_as_404
def zero_data_retention(request: HttpRequest) -> HttpResponse:
    admin = _page_admin(request)
    form = ZeroDataRetentionForm(request.POST)
    form.is_valid()  # an unchecked box is off: the form cannot be invalid
    enabled = bool(form.cleaned_data.get("zero_data_retention"))
    members.set_zero_data_retention(by=admin, enabled=enabled)
    messages.success(request, "Zero Data Retention is on: answers are no longer stored at the "
                     "provider." if enabled else "Zero Data Retention is off: long answers are "
                     "stored at the provider while they run, so they can resume after a restart.")
    return redirect(_org_url("org:members", admin.organization_id))


@login_required
@require_POST
@_not_found_as_404
def revoke_invitation(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = invitations.get_invitation_for_admin(request.user, invitation_id)  # type: ignore[arg-type]
    admin = members.acting_membership(user=request.user, organization=invitation.organization)  # type: ignore[arg-type]
    if invitations.revoke_invitation(by=admin, invitation=invitation):
        messages.success(request, f"The invitation for {invitation.email} no longer works.")
    else:
        messages.info(request, f"The invitation for {invitation.email} was already used, "
                               "withdrawn or expired.")
    return redirect(_org_url("org:members", invitation.organization_id))


def _member_action(request: HttpRequest, membership_id: int) -> tuple[Membership, Membership]:
    target = members.get_member_for_admin(request.user, membership_id)  # type: ignore[arg-type]
    admin = members.acting_membership(user=request.user, organization=target.organization)  # type: ignore[arg-type]
    return admin, target


@login_required
@require_POST
@_not_found_as_404
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
    return redirect(_org_url("org:members", admin.organization_id))


@login_required
@require_POST
@_not_found_as_404
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
    return redirect(_org_url("org:members", admin.organization_id))


@login_required
@require_POST
@_not_found_as_404
def remove_member(request: HttpRequest, membership_id: int) -> HttpResponse:
    admin, target = _member_action(request, membership_id)
    try:
        members.remove_member(by=admin, target=target)
    except members.MemberChangeRefused as exc:
        return _members_page(request, admin, status=400, error=str(exc))
    messages.success(request, f"{target.user} is no longer a member of {target.organization}.")
    if target.user_id == request.user.pk:  # they removed themselves: no org page to go back to
        return redirect("conversations:home")
    return redirect(_org_url("org:members", admin.organization_id))


# --- Usage & budgets ----------------------------------------------------------------------


def _usage_page(request: HttpRequest, admin: Membership, *, period: Any = None,
                status: int = 200, error: str = "", budget_form: OrgBudgetForm | None = None,
                bound_approvals: dict[int, ApproveForm] | None = None) -> HttpResponse:
    organization = admin.organization
    period = period or period_start(organization)
    report = usage.usage_report(organization=organization, period=period)
    org_status, member_budgets = usage.budget_overview(organization=organization, period=period)
    periods = usage.known_periods(organization)
    if period not in periods:
        periods = sorted([*periods, period], reverse=True)
    pending = []
    for budget_request in requests.pending_requests(organization):
        membership = budget_request.membership
        pending.append({
            "request": budget_request,
            "current": member_limit(membership),
            "form": (bound_approvals or {}).get(budget_request.pk) or ApproveForm(
                initial={"new_budget_usd": requests.suggested_budget(membership)},
                auto_id=f"id_r{budget_request.pk}_%s",
            ),
        })
    return render(request, "org/usage.html", {
        "admin": admin,
        "organization": organization,
        "period": period,
        "is_current": period == period_start(organization),
        "periods": periods,
        "report": report,
        "chart": usage.cost_chart(report),
        "org_status": org_status,
        "member_budgets": member_budgets,
        "pending": pending,
        "budget_form": budget_form or OrgBudgetForm(initial={
            "monthly_budget_usd": organization.monthly_budget_usd,
            "member_budget_usd": organization.member_budget_usd,
        }),
        "error": error,
        "section": "usage",
    }, status=status)


@login_required
@require_GET
@_not_found_as_404
def usage_page(request: HttpRequest) -> HttpResponse:
    admin = _page_admin(request)
    try:
        period = usage.parse_period(request.GET.get("period"), admin.organization)
    except usage.BadPeriod as exc:
        return _usage_page(request, admin, status=400, error=str(exc))
    return _usage_page(request, admin, period=period)


@login_required
@require_GET
@_not_found_as_404
def usage_csv(request: HttpRequest) -> HttpResponse:
    admin = _page_admin(request)
    try:
        period = usage.parse_period(request.GET.get("period"), admin.organization)
    except usage.BadPeriod as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    report = usage.usage_report(organization=admin.organization, period=period)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    filename = f"usage-org{admin.organization_id}-{period:%Y-%m}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerows(usage.csv_rows(report))
    return response


@login_required
@require_POST
@_not_found_as_404
def org_budgets(request: HttpRequest) -> HttpResponse:
    admin = _page_admin(request)
    form = OrgBudgetForm(request.POST)
    if not form.is_valid():
        return _usage_page(request, admin, status=400, budget_form=form,
                           error="The budgets were not changed.")
    try:
        members.set_org_budgets(by=admin, **form.cleaned_data)
    except members.MemberChangeRefused as exc:
        return _usage_page(request, admin, status=400, budget_form=form, error=str(exc))
    messages.success(request, "Budgets saved. They apply to turns from now on.")
    return redirect(_org_url("org:usage", admin.organization_id))


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _back(request: HttpRequest, fallback: str) -> str:
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return referer
    return fallback


def _requesting_membership(request: HttpRequest) -> Membership:
    named = request.POST.get("organization") or request.GET.get("org")
    if named:
        return members.get_own_membership(request.user, _int(named))  # type: ignore[arg-type]
    return get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]


def _budget_request_page(request: HttpRequest, membership: Membership, *, status: int = 200,
                         form: BudgetRequestForm | None = None, error: str = "") -> HttpResponse:
    return render(request, "org/budget_request.html", {
        "membership": membership,
        "organization": membership.organization,
        "budget": budget_status(membership),
        "form": form or BudgetRequestForm(),
        "error": error,
    }, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def request_budget(request: HttpRequest) -> HttpResponse:
    """Any member asks for more budget. The chat page posts here with
    ``Accept: application/json``; without it this is a plain form page."""
    wants_json = _wants_json(request)
    try:
        membership = _requesting_membership(request)
    except NotFound as exc:
        if wants_json:
            return JsonResponse({"ok": False, "error": exc.detail}, status=404)
        raise Http404(exc.detail) from exc
    if request.method == "GET":
        return _budget_request_page(request, membership)
    form = BudgetRequestForm(request.POST)
    if not form.is_valid():
        detail = "; ".join(str(e) for e in form.errors.get("note", [])) or "Check the note and try again."
        if wants_json:
            return JsonResponse({"ok": False, "error": detail}, status=400)
        return _budget_request_page(request, membership, status=400, form=form, error=detail)
    try:
        budget_request = requests.request_more_budget(membership=membership,
                                                      note=form.cleaned_data["note"])
    except requests.BudgetRequestRefused as exc:
        if wants_json:
            return JsonResponse({"ok": False, "error": str(exc)}, status=409)
        return _budget_request_page(request, membership, status=409, form=form, error=str(exc))
    if wants_json:
        return JsonResponse({"ok": True, "id": budget_request.pk})
    messages.success(request, "Your request was sent to the org's admins. You will get a "
                              "notification when they answer.")
    return redirect(_back(request, reverse("conversations:home")))


def _decision(request: HttpRequest, request_id: int) -> tuple[Membership, Any]:
    budget_request = requests.get_budget_request_for_admin(request.user, request_id)  # type: ignore[arg-type]
    admin = members.acting_membership(
        user=request.user, organization=budget_request.membership.organization,  # type: ignore[arg-type]
    )
    return admin, budget_request


@login_required
@require_POST
@_not_found_as_404
def approve_request(request: HttpRequest, request_id: int) -> HttpResponse:
    admin, budget_request = _decision(request, request_id)
    form = ApproveForm(request.POST, auto_id=f"id_r{budget_request.pk}_%s")
    if not form.is_valid():
        return _usage_page(request, admin, status=400, bound_approvals={budget_request.pk: form},
                           error=f"The request from {budget_request.membership.user} was not "
                                 "answered.")
    new_budget = form.cleaned_data["new_budget_usd"]
    try:
        requests.approve_budget_request(by=admin, budget_request=budget_request,
                                        new_budget_usd=new_budget)
    except requests.BudgetRequestRefused as exc:
        return _usage_page(request, admin, status=409, error=str(exc))
    messages.success(request, f"Approved: {budget_request.membership.user} now has "
                              f"${new_budget:,.2f} a month.")
    return redirect(_org_url("org:usage", admin.organization_id) + "#requests")


@login_required
@require_POST
@_not_found_as_404
def decline_request(request: HttpRequest, request_id: int) -> HttpResponse:
    admin, budget_request = _decision(request, request_id)
    try:
        requests.decline_budget_request(by=admin, budget_request=budget_request)
    except requests.BudgetRequestRefused as exc:
        return _usage_page(request, admin, status=409, error=str(exc))
    messages.success(request, f"Declined the request from {budget_request.membership.user}.")
    return redirect(_org_url("org:usage", admin.organization_id) + "#requests")


@login_required
@require_GET
def turn_estimates(request: HttpRequest) -> HttpResponse:
    """Cost range per reasoning effort for a prompt of ``prompt_tokens`` on ``profile``
    (by name), learned from the current org's recent turns. JSON for the chat page."""
    try:
        membership = _requesting_membership(request)
        profile = enabled_profiles(membership.organization).get(name=request.GET.get("profile", ""))
    except (NotFound, ModelProfile.DoesNotExist):
        return JsonResponse({"ok": False, "error": "No such model for your organization."},
                            status=404)
    prompt_tokens = _int(request.GET.get("prompt_tokens", "0"))
    if prompt_tokens is None or not 0 <= prompt_tokens <= profile.context_window:
        return JsonResponse({"ok": False, "error": "prompt_tokens must be a whole number from 0 "
                             f"to {profile.context_window}."}, status=400)
    efforts = estimate_turn_costs(organization=membership.organization, profile=profile,
                                  prompt_tokens=prompt_tokens)
    return JsonResponse({"ok": True, "profile": profile.name, "prompt_tokens": prompt_tokens,
                         "efforts": efforts})


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


# --- Notifications ------------------------------------------------------------------------


@login_required
@require_GET
def notifications_page(request: HttpRequest) -> HttpResponse:
    items = list(inbox.notifications_for(request.user)[: inbox.PAGE_SIZE])  # type: ignore[arg-type]
    return render(request, "org/notifications.html", {
        "notifications": items,
        "unread": sum(1 for item in items if item.read_at is None),
    })


@login_required
@require_POST
@_not_found_as_404
def mark_notifications_read(request: HttpRequest) -> HttpResponse:
    raw = request.POST.get("notification")
    notification_id = None
    if raw:
        notification_id = _int(raw)
        if notification_id is None:
            raise NotFound("notification")
    inbox.mark_read(user=request.user, notification_id=notification_id)  # type: ignore[arg-type]
    if _wants_json(request):
        return JsonResponse({"ok": True})
    return redirect("org:notifications")
