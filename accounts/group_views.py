"""The org's Groups pages (admins only): create a group, map it to a provider group, set
its role floor, models and budget, and add or remove its members.

Views parse input, fetch through one permission-checked function
(``groups.get_group_for_admin``), call one domain function and respond. A group of
another org is a 404, like one that does not exist.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts import groups
from accounts.group_forms import GroupForm, GroupMemberForm
from accounts.model_access import enabled_profiles
from accounts.models import Group, IdentityProvider, Membership
from accounts.org_views import page_admin
from chatsite.params import parse_id


def _group_form(admin: Membership, data: Any = None, *, group: Group | None = None) -> GroupForm:
    initial = {}
    if group is not None:
        initial = {"name": group.name, "claim_value": group.claim_value,
                   "role_floor": group.role_floor, "profiles": list(group.profiles.all()),
                   "monthly_budget_usd": group.monthly_budget_usd}
    return GroupForm(data, initial=initial, organization=admin.organization,
                     profiles=enabled_profiles(admin.organization, user=None))


def _groups_url(organization_id: int) -> str:
    return f"{reverse('org:groups')}?org={organization_id}"


def _group_url(group: Group) -> str:
    return f"{reverse('org:group', args=[group.pk])}?org={group.organization_id}"


@login_required
@require_http_methods(["GET", "POST"])
def groups_page(request: HttpRequest) -> HttpResponse:
    admin = page_admin(request)
    form = _group_form(admin, request.POST or None)
    error = ""
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                group = groups.create_group(by=admin, fields=form.fields_value())
            except groups.GroupRefused as exc:
                error = str(exc)
            else:
                messages.success(request, f"Group {group.name} created.")
                return redirect(_group_url(group))
        status = 400
    provider = IdentityProvider.objects.filter(organization_id=admin.organization_id,
                                               enabled=True).first()
    rows = [{"group": group, "count": group.member_count,  # type: ignore[attr-defined]
             "profiles": list(group.profiles.all())}
            for group in groups.groups_of(admin.organization)]
    return render(request, "org/groups.html", {
        "organization": admin.organization, "admin": admin, "rows": rows, "form": form,
        "provider": provider, "error": error, "section": "groups",
    }, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def group_page(request: HttpRequest, group_id: int) -> HttpResponse:
    admin = page_admin(request)
    group = groups.get_group_for_admin(admin, group_id)
    form = _group_form(admin, request.POST or None, group=group)
    error = ""
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                groups.update_group(by=admin, group=group, fields=form.fields_value())
            except groups.GroupRefused as exc:
                error = str(exc)
            else:
                messages.success(request, f"Group {form.cleaned_data['name']} saved.")
                return redirect(_group_url(group))
        status = 400
    return _group_detail(request, admin, group, form=form, error=error, status=status)


def _group_detail(request: HttpRequest, admin: Membership, group: Group, *,
                  form: GroupForm | None = None, member_form: GroupMemberForm | None = None,
                  error: str = "", status: int = 200) -> HttpResponse:
    return render(request, "org/group.html", {
        "organization": admin.organization, "admin": admin, "group": group,
        "form": form or _group_form(admin, group=group),
        "member_form": member_form or GroupMemberForm(),
        "members": groups.members_of(group), "error": error, "section": "groups",
    }, status=status)


@login_required
@require_POST
def delete_group(request: HttpRequest, group_id: int) -> HttpResponse:
    admin = page_admin(request)
    group = groups.get_group_for_admin(admin, group_id)
    name = group.name
    groups.delete_group(by=admin, group=group)
    messages.success(request, f"Group {name} deleted.")
    return redirect(_groups_url(admin.organization_id))


@login_required
@require_POST
def add_member(request: HttpRequest, group_id: int) -> HttpResponse:
    admin = page_admin(request)
    group = groups.get_group_for_admin(admin, group_id)
    form = GroupMemberForm(request.POST)
    if form.is_valid():
        try:
            groups.add_member(by=admin, group=group, email=form.cleaned_data["email"])
        except groups.GroupRefused as exc:
            return _group_detail(request, admin, group, member_form=form, error=str(exc),
                                 status=400)
        messages.success(request, f"{form.cleaned_data['email']} added to {group.name}.")
        return redirect(_group_url(group))
    return _group_detail(request, admin, group, member_form=form, status=400)


@login_required
@require_POST
def remove_member(request: HttpRequest, group_id: int, user_id: int) -> HttpResponse:
    admin = page_admin(request)
    group = groups.get_group_for_admin(admin, group_id)
    email = groups.remove_member(by=admin, group=group, user_id=parse_id(str(user_id)) or 0)
    messages.success(request, f"{email} removed from {group.name}.")
    return redirect(_group_url(group))
