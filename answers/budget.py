"""The turn's reservation, which every upstream request of an answer (each tool round,
each retry) must fit before it is sent: charged <= reserved, always."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from answers.draft import AnswerDraft
from answers.lifecycle import answer_prices
from answers.runtime import Runtime, release_db
from billing import quotas
from conversations.models import Message
from llm.pricing import Prices, affordable_completion_tokens, usage_cost, worst_case_cost

logger = logging.getLogger(__name__)

# A tool round with a smaller completion budget than this would mostly end in reasoning.
MIN_TOOL_ROUND_TOKENS = 1024


@dataclass
class TurnBudget:
    """What is left of the turn's reservation for the next request.

    ``prompt_tokens`` bounds the prompt of the request about to be sent, everything it
    carries counted (``prompts.request_tokens``); it grows with each tool round.
    """

    message: Message
    reserved: Decimal | None  # None: a turn without a reservation has nothing to keep to
    prompt_tokens: int
    # The answer's snapshotted prices: fixed for the whole turn, so read once.
    prices: Prices = field(init=False)

    def __post_init__(self) -> None:
        self.prices = answer_prices(self.message)

    def committed(self, draft: AnswerDraft) -> Decimal:
        """What settlement would charge if the turn ended now, at the dearest of the
        answer's tiers (the one the provider reports is not known yet)."""
        usage, _ = draft.billable_usage()
        return max(usage_cost(tier, usage) for tier in self.prices.billable_tiers())

    def worst_case(self, cap: int) -> Decimal:
        return worst_case_cost(self.prices, prompt_tokens=self.prompt_tokens, completion_cap=cap)

    async def cover(self, cap: int, draft: AnswerDraft, runtime: Runtime) -> bool:
        """Whether the next request, with completion cap ``cap``, fits the reservation,
        extending the reservation first (against both budgets) when what is left of it
        falls short. False: the request must not be sent."""
        if self.reserved is None:
            return True
        short = self.committed(draft) + self.worst_case(cap) - self.reserved
        if short <= 0:
            return True
        extended = await runtime.db(lambda: _extend_released(self.message.pk, short))
        if extended is None:
            logger.info("message %s: the budget cannot cover another request ($%s short)",
                        self.message.pk, short)
            return False
        self.reserved = extended
        return True

    def affordable_cap(self, draft: AnswerDraft) -> int:
        """The largest completion cap what is left of the reservation covers."""
        assert self.reserved is not None
        left = self.reserved - self.committed(draft) - self.worst_case(0)
        return affordable_completion_tokens(self.prices, left, prompt_tokens=self.prompt_tokens)

    async def cap_for_round(self, full_cap: int, draft: AnswerDraft, runtime: Runtime) -> int:
        """The completion cap of the round about to be sent: the turn's whole cap when the
        budget covers it (reserving more if needed), else what the reservation still
        covers; 0 when that is too little for a round worth sending."""
        if await self.cover(full_cap, draft, runtime):
            return full_cap
        cap = self.affordable_cap(draft)
        if cap < min(MIN_TOOL_ROUND_TOKENS, full_cap):
            return 0
        assert self.reserved is not None
        covered = self.committed(draft) + self.worst_case(cap) <= self.reserved
        return cap if covered else 0


def _extend_released(message_id: int, amount: Decimal) -> Decimal | None:
    try:
        return quotas.extend(message_id=message_id, amount=amount)
    finally:
        release_db()
