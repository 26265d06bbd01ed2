"""The money pages: Usage & budgets (with its CSV), budget requests, cost estimates and
notifications.

Views parse input, fetch through one permission-checked function, call one domain
function and respond. A NotFound from any fetch escapes and is a 404
(``chatsite.middleware.NotFoundAs404Middleware``): an id from another org looks exactly
like an id that does not exist. The JSON endpoints of the chat page answer it in JSON.
"""

from __future__ import annotations

import csv
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import members
from accounts.model_access import enabled_profiles
from accounts.models import Membership
from accounts.org_views import org_url, page_admin
from billing import inbox, requests, usage
from billing.estimates import estimate_turn_costs
from billing.forms import ApproveForm, BudgetRequestForm, OrgBudgetForm
from billing.models import BudgetRequest
from billing.quotas import budget_status, member_limit, period_start
from chatsite.errors import NotFound
from chatsite.params import parse_id
from llm.models import ModelProfile

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
def usage_page(request: HttpRequest) -> HttpResponse:
    admin = page_admin(request)
    try:
        period = usage.parse_period(request.GET.get("period"), admin.organization)
    except usage.BadPeriod as exc:
        return _usage_page(request, admin, status=400, error=str(exc))
    return _usage_page(request, admin, period=period)


@login_required
@require_GET
def usage_csv(request: HttpRequest) -> HttpResponse:
    admin = page_admin(request)
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
def org_budgets(request: HttpRequest) -> HttpResponse:
    admin = page_admin(request)
    form = OrgBudgetForm(request.POST)
    if not form.is_valid():
        return _usage_page(request, admin, status=400, budget_form=form,
                           error="The budgets were not changed.")
    try:
        members.set_org_budgets(by=admin, **form.cleaned_data)
    except members.MemberChangeRefused as exc:
        return _usage_page(request, admin, status=400, budget_form=form, error=str(exc))
    messages.success(request, "Budgets saved. They apply to turns from now on.")
    return redirect(org_url("billing:usage", admin.organization_id))


# --- Budget requests ----------------------------------------------------------------------


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
        return members.get_own_membership(request.user, parse_id(named))  # type: ignore[arg-type]
    return members.get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]


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
        if not wants_json:
            raise
        return JsonResponse({"ok": False, "error": exc.detail}, status=404)
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


def _decision(request: HttpRequest, request_id: int) -> tuple[Membership, BudgetRequest]:
    budget_request = requests.get_budget_request_for_admin(request.user, request_id)  # type: ignore[arg-type]
    admin = members.acting_membership(
        user=request.user, organization=budget_request.membership.organization,  # type: ignore[arg-type]
    )
    return admin, budget_request


@login_required
@require_POST
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
    return redirect(org_url("billing:usage", admin.organization_id) + "#requests")


@login_required
@require_POST
def decline_request(request: HttpRequest, request_id: int) -> HttpResponse:
    admin, budget_request = _decision(request, request_id)
    try:
        requests.decline_budget_request(by=admin, budget_request=budget_request)
    except requests.BudgetRequestRefused as exc:
        return _usage_page(request, admin, status=409, error=str(exc))
    messages.success(request, f"Declined the request from {budget_request.membership.user}.")
    return redirect(org_url("billing:usage", admin.organization_id) + "#requests")


# --- Cost estimates -----------------------------------------------------------------------


@login_required
@require_GET
def turn_estimates(request: HttpRequest) -> HttpResponse:
    """Cost range per reasoning effort for a prompt of ``prompt_tokens`` on ``profile``
    (by name), learned from the current org's recent turns. JSON for the chat page, which
    reads a missing org or model from the JSON too."""
    try:
        membership = _requesting_membership(request)
        profile = enabled_profiles(membership.organization, user=request.user).get(  # type: ignore[arg-type]
            name=request.GET.get("profile", ""))
    except (NotFound, ModelProfile.DoesNotExist):
        return JsonResponse({"ok": False, "error": "No such model for your organization."},
                            status=404)
    prompt_tokens = parse_id(request.GET.get("prompt_tokens", "0"))
    if prompt_tokens is None or not 0 <= prompt_tokens <= profile.context_window:
        return JsonResponse({"ok": False, "error": "prompt_tokens must be a whole number from 0 "
                             f"to {profile.context_window}."}, status=400)
    efforts = estimate_turn_costs(organization=membership.organization, profile=profile,
                                  prompt_tokens=prompt_tokens)
    return JsonResponse({"ok": True, "profile": profile.name, "prompt_tokens": prompt_tokens,
                         "efforts": efforts})


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
def mark_notifications_read(request: HttpRequest) -> HttpResponse:
    raw = request.POST.get("notification")
    notification_id = None
    if raw:
        notification_id = parse_id(raw)
        if notification_id is None:
            raise NotFound("notification")
    inbox.mark_read(user=request.user, notification_id=notification_id)  # type: ignore[arg-type]
    if _wants_json(request):
        return JsonResponse({"ok": True})
    return redirect("billing:notifications")
