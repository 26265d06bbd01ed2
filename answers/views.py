"""What the chat page asks before a turn starts: the member's budget (and the org's and
those of the member's groups with one) and what the next turn would cost, estimated the
way ``start_turn`` reserves it. Another person's conversation id is NotFound, which the
middleware turns into a 404."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse

from accounts.model_access import default_profile
from answers.prompts import estimate_prompt_tokens
from billing import group_budgets
from billing.estimates import estimate_turn_costs
from billing.quotas import BudgetStatus, budget_status, period_start, worst_case_cost
from chatsite.params import parse_id
from conversations.access import get_conversation_for_user, get_membership


@login_required
def budget(request: HttpRequest) -> JsonResponse:
    """The member's budget meter and the estimated cost of the next turn per effort.

    ``budget.groups`` lists the member's groups in this org that have a budget, each
    entry shaped like ``budget.member`` plus the group's ``name``. Each estimate's
    ``worst`` is what the turn would reserve for an empty message: the composer offers
    "Request more" only when the member's own budget is below it."""
    membership = get_membership(request.user, request.session.get("organization_id"))  # type: ignore[arg-type]
    organization = membership.organization
    conversation = None
    conversation_id = parse_id(request.GET.get("conversation"))
    if conversation_id is not None:
        conversation = get_conversation_for_user(request.user, conversation_id)  # type: ignore[arg-type]
    profile = conversation.profile if conversation else default_profile(
        organization, user=request.user)  # type: ignore[arg-type]
    estimates = {}
    if profile is not None:
        prompt_tokens = estimate_prompt_tokens(
            conversation_id=conversation.pk if conversation else None, content="",
            profile=profile, org_message=organization.developer_message,
            custom=conversation.custom_instructions if conversation else "",
            completion_cap=profile.max_completion_tokens,
        )
        estimates = estimate_turn_costs(organization=organization, profile=profile,
                                        prompt_tokens=prompt_tokens)
        for effort, estimate in estimates.items():
            estimate["worst"] = str(worst_case_cost(
                profile, prompt_tokens=prompt_tokens, completion_cap=profile.completion_cap(effort)))
    statuses = budget_status(membership)
    resets_on = statuses["member"].resets_on
    groups = [
        {"name": month.name, **BudgetStatus(limit=month.limit, spent=month.spent,
                                           reserved=month.reserved, resets_on=resets_on).as_dict()}
        for month in group_budgets.months_of(membership, period_start(organization))
    ]
    return JsonResponse({
        "budget": {**{name: status.as_dict() for name, status in statuses.items()},
                   "groups": groups},
        "estimates": estimates,
    })
