"""Forms for the money pages: they parse and validate input, domain modules act on it."""

from __future__ import annotations

from django import forms

from accounts.org_forms import MEMBER_BUDGET_LABEL, ORG_BUDGET_LABEL, BudgetField


class OrgBudgetForm(forms.Form):
    monthly_budget_usd = BudgetField(label=ORG_BUDGET_LABEL)
    member_budget_usd = BudgetField(
        label=MEMBER_BUDGET_LABEL,
        help_text="The default for every member without their own budget. Empty means no limit.",
    )


class BudgetRequestForm(forms.Form):
    note = forms.CharField(
        label="Note", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What you are working on and how much more you need.",
    )


class ApproveForm(forms.Form):
    new_budget_usd = BudgetField(
        label="New member monthly budget (USD)", required=True, help_text="",
        error_messages={"required": "Enter the new monthly budget for this member."},
    )
