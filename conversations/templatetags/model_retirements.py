"""``{% retirement_notice %}``: the banner an org's admins see before its default model
shuts down (conversations.retirements), on every page that knows the viewer's membership."""

from __future__ import annotations

from typing import Any

from django import template

from conversations.retirements import RetirementNotice
from conversations.retirements import retirement_notice as notice_for

register = template.Library()


@register.inclusion_tag("conversations/_retirement_notice.html", takes_context=True)
def retirement_notice(context: template.Context) -> dict[str, RetirementNotice | None]:
    """The notice for admins only; pages name the viewer's membership ``membership`` (the
    chat page) or ``admin`` (the org pages)."""
    membership: Any = context.get("membership") or context.get("admin")
    if membership is None or not getattr(membership, "is_admin", False):
        return {"notice": None}
    return {"notice": notice_for(membership.organization)}
