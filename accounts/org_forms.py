"""Forms for the org pages (the money pages' are billing.forms): they parse and validate
input, domain modules act on it."""

from __future__ import annotations

import re
from typing import Any

from django import forms

from accounts.invitations import INVITABLE_ROLES
from accounts.models import MAX_RETENTION_DAYS, Membership

ORG_BUDGET_LABEL = "Org monthly budget (USD)"
MEMBER_BUDGET_LABEL = "Member monthly budget (USD)"


class BudgetField(forms.DecimalField):
    """Dollars and cents, zero or more; empty means no limit."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "Empty means no limit.")
        kwargs["error_messages"] = {
            "invalid": "Enter an amount in US dollars, like 25 or 12.50.",
            "min_value": "A budget cannot be negative. Leave it empty for no limit.",
            "max_digits": "That amount is too large.",
            "max_decimal_places": "Use at most two decimal places (cents).",
            "max_whole_digits": "That amount is too large.",
            **kwargs.get("error_messages", {}),
        }
        super().__init__(min_value=0, max_digits=12, decimal_places=2, **kwargs)

    def to_python(self, value: Any) -> Any:
        # Decimal() reads "٣" as 3 and "1e3" as 1000; an amount of money is typed with
        # ASCII digits and at most one decimal point, or it is a typo.
        if isinstance(value, str) and value.strip() and not re.fullmatch(
            r"\s*[0-9]+(\.[0-9]*)?\s*|\s*\.[0-9]+\s*|\s*-[0-9.]+\s*", value
        ):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class MemberBudgetForm(forms.Form):
    monthly_budget_usd = BudgetField(
        label=MEMBER_BUDGET_LABEL,
        help_text="Empty uses the org's member budget.",
    )


class RoleForm(forms.Form):
    role = forms.ChoiceField(
        label="Role", choices=Membership.Role.choices,
        error_messages={"invalid_choice": "Choose a role: owner, admin or member."},
    )


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)
    role = forms.ChoiceField(
        label="Role", initial=Membership.Role.MEMBER,
        choices=[(value, label) for value, label in Membership.Role.choices if value in INVITABLE_ROLES],
        error_messages={"invalid_choice": "Invite people as a member or an admin."},
    )


class AllowedDomainsForm(forms.Form):
    domains = forms.CharField(
        label="Allowed email domains", required=False, max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="People with a verified address at these domains may join as members "
                  "without an invitation. One per line; only your own verified email's domain. "
                  "Empty: invitations only.",
    )


class ZeroDataRetentionForm(forms.Form):
    zero_data_retention = forms.BooleanField(
        label="Zero Data Retention", required=False,
        help_text="Your provider agreement keeps no data: answers are never stored at the "
                  "provider. Long answers then cannot resume after a worker restart and are "
                  "interrupted instead.",
    )


class DaysField(forms.IntegerField):
    """A whole number of days, typed with ASCII digits (int() also reads "٣" as 3)."""

    def to_python(self, value: Any) -> int | None:
        if isinstance(value, str) and value.strip() and not re.fullmatch(r"\s*-?[0-9]+\s*", value):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        days: int | None = super().to_python(value)
        return days


class RetentionForm(forms.Form):
    retention_days = DaysField(
        label="Delete conversations untouched for (days)", required=False,
        min_value=1, max_value=MAX_RETENTION_DAYS,
        help_text="Every day, conversations nobody wrote in for this many days are deleted, "
                  "as if their owners had deleted them; what they cost stays in usage. "
                  "Empty keeps conversations until their owners delete them.",
        error_messages={
            "invalid": "Enter a whole number of days, like 90, or leave it empty.",
            "min_value": "Keep conversations at least 1 day, or leave it empty to keep them.",
            "max_value": f"Retention is at most {MAX_RETENTION_DAYS:,} days (ten years); "
                         "leave it empty to keep conversations.",
        },
    )
    delete_shares = forms.BooleanField(
        label="Also delete their share links", required=False,
        help_text="Unticked, the share links of deleted conversations keep working: readers "
                  "still see the snapshot that was shared.",
    )


class InvitationSignUpForm(forms.Form):
    """Sign-up through an invitation: the address is the invited one and cannot change."""

    email = forms.EmailField(label="Email", disabled=True, required=False)
    password = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput)

