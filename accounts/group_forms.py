"""Forms of the Groups and Single sign-on pages: they parse and validate input, the domain
modules (``accounts.groups``, ``accounts.sso``) act on it."""

from __future__ import annotations

from typing import Any

from django import forms

from accounts.groups import GroupFields
from accounts.models import Group, Organization
from accounts.org_forms import BudgetField
from accounts.sso_models import claim_name
from llm.models import ModelProfile


class GroupForm(forms.Form):
    name = forms.CharField(label="Group name", max_length=120)
    claim_value = forms.CharField(
        label="Provider group", max_length=255, required=False,
        help_text="The value in the identity provider's groups claim that puts people in "
                  "this group (re-read at every sign-in). Empty: add members here.",
    )
    role_floor = forms.ChoiceField(
        label="Role floor", choices=Group.RoleFloor.choices, initial=Group.RoleFloor.MEMBER,
        help_text="Members of this group are at least this in the org.",
    )
    profiles = forms.ModelMultipleChoiceField(
        label="Models", required=False, queryset=ModelProfile.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="A model any group lists is open only to the members of the groups that "
                  "list it; a model no group lists stays open to everyone in the org.",
    )
    monthly_budget_usd = BudgetField(
        label="Group monthly budget (USD)",
        help_text="What the group's members may spend together each month. Empty: no limit.",
    )

    def __init__(self, *args: Any, organization: Organization, profiles: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["profiles"].queryset = profiles  # type: ignore[attr-defined]
        self.organization = organization

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the group a name.")
        return str(name)

    def clean_claim_value(self) -> str:
        return str(self.cleaned_data.get("claim_value", "")).strip()

    def fields_value(self) -> GroupFields:
        data = self.cleaned_data
        return GroupFields(
            name=data["name"], claim_value=data["claim_value"], role_floor=data["role_floor"],
            profiles=list(data["profiles"]), monthly_budget_usd=data["monthly_budget_usd"],
        )


class GroupMemberForm(forms.Form):
    email = forms.EmailField(label="Member's email", max_length=254)


class SingleSignOnForm(forms.Form):
    """What the org's admins decide about their provider; the connection itself (discovery
    URL, client id, secret variable) is the operator's, in the Django admin."""

    sso_only = forms.BooleanField(
        label="SSO only", required=False,
        help_text="Members sign in only through the identity provider: password sign-in "
                  "and password reset are refused for them. Owners keep their password "
                  "for when the provider is down.",
    )
    groups_claim = forms.CharField(
        label="Groups claim", max_length=100, validators=[claim_name],
        help_text="The ID-token claim that lists a person's groups (usually groups).",
    )
