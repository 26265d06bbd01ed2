"""The one place that turns tokens into dollars, and guesses tokens nobody reported.

Every price calculation in the product goes through here: the worst case a turn reserves,
the actual cost it settles to, the flagged estimate for a stopped or interrupted answer,
how many completion tokens a remaining reservation still affords, and the cost ranges the
composer shows before sending. Prices are per million tokens. They come from a
``PriceSource``: a model profile (today's prices) or the ``Prices`` snapshotted on an
answer when its turn started, so an admin editing a price mid-answer changes nothing for
that answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from conversations.llm.types import Usage
from conversations.tokens import count_tokens

MILLION = Decimal(1_000_000)
MICRO = Decimal("0.000001")  # every money column has decimal_places=6

# Without a usage chunk (stop, crash, dropped stream) the hidden reasoning is unknown;
# bill a conservative allowance per effort rather than nothing, and flag it.
REASONING_ALLOWANCE = {"minimal": 256, "low": 1024, "medium": 4096, "high": 16384}
DEFAULT_REASONING_ALLOWANCE = 4096


class PriceSource(Protocol):
    """A model profile (today's prices) or an answer's ``Prices`` snapshot."""

    @property
    def input_price(self) -> Decimal: ...

    @property
    def cached_input_price(self) -> Decimal: ...

    @property
    def output_price(self) -> Decimal: ...


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, as snapshotted on an answer at reservation."""

    input_price: Decimal
    cached_input_price: Decimal
    output_price: Decimal
    # Other service tiers' prices ({"flex": {"input": …, "cached_input": …, "output": …}}),
    # snapshotted with the standard ones so a turn is billed at the tier that served it.
    tiers: dict[str, dict[str, str]] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, source: PriceSource) -> Prices:
        tiers = getattr(source, "tier_prices", None)
        return cls(Decimal(source.input_price), Decimal(source.cached_input_price),
                   Decimal(source.output_price), valid_tier_prices(tiers))

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> Prices:
        return cls(Decimal(snapshot["input"]), Decimal(snapshot["cached_input"]),
                   Decimal(snapshot["output"]), valid_tier_prices(snapshot.get("tiers")))

    def snapshot(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "input": str(self.input_price), "cached_input": str(self.cached_input_price),
            "output": str(self.output_price),
        }
        if self.tiers:
            values["tiers"] = self.tiers
        return values

    def at_tier(self, tier: str) -> Prices:
        """The prices of the tier the provider reported serving; the standard prices for
        the default tier, an unreported one, or one without prices (documented)."""
        prices = self.tiers.get(tier)
        if not prices:
            return Prices(self.input_price, self.cached_input_price, self.output_price)
        return Prices(Decimal(prices["input"]), Decimal(prices["cached_input"]),
                      Decimal(prices["output"]))


def valid_tier_prices(tiers: Any) -> dict[str, dict[str, str]]:
    """Tier prices with all three prices as decimals; anything else is left out."""
    valid: dict[str, dict[str, str]] = {}
    if not isinstance(tiers, dict):
        return valid
    for tier, prices in tiers.items():
        if not isinstance(prices, dict):
            continue
        try:
            values = {key: str(Decimal(str(prices[key]))) for key in ("input", "cached_input", "output")}
        except (KeyError, ArithmeticError, ValueError):
            continue
        if all(Decimal(v).is_finite() and Decimal(v) >= 0 for v in values.values()):
            valid[str(tier)] = values
    return valid


def prices_for_answer(*, snapshot: dict[str, Any] | None, profile: PriceSource | None) -> Prices:
    """The answer's snapshotted prices; the profile's only for answers saved before
    snapshots were taken at reservation."""
    if snapshot:
        return Prices.from_snapshot(snapshot)
    if profile is None:
        raise ValueError("an answer without a price snapshot needs its profile")
    return Prices.of(profile)


def exact_cost(prices: PriceSource, *, prompt_tokens: int, cached_tokens: int,
               completion_tokens: int) -> Decimal:
    """Unrounded dollars; reasoning tokens are already inside ``completion_tokens``."""
    uncached = max(prompt_tokens - cached_tokens, 0)
    return (
        uncached * prices.input_price
        + cached_tokens * prices.cached_input_price
        + completion_tokens * prices.output_price
    ) / MILLION


def usage_cost(prices: PriceSource, usage: Usage) -> Decimal:
    """What a turn (or title) with this usage is charged, to the micro-dollar."""
    return exact_cost(
        prices, prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
        completion_tokens=usage.completion_tokens,
    ).quantize(MICRO)


def worst_case_cost(prices: PriceSource, *, prompt_tokens: int, completion_cap: int) -> Decimal:
    """Every prompt token uncached and the whole cap spent (reasoning included), rounded
    up so a reservation never holds a fraction of a micro-dollar too little."""
    cost = exact_cost(prices, prompt_tokens=prompt_tokens, cached_tokens=0,
                      completion_tokens=completion_cap)
    return cost.quantize(MICRO, rounding=ROUND_CEILING)


def range_cost(prices: PriceSource, *, prompt_tokens: int, completion_tokens: Decimal) -> Decimal:
    """A point of the pre-send cost range (prompt priced uncached)."""
    cost = (prompt_tokens * prices.input_price + completion_tokens * prices.output_price) / MILLION
    return cost.quantize(MICRO, rounding=ROUND_HALF_UP)


def affordable_completion_tokens(prices: PriceSource, amount: Decimal) -> int:
    """How many output tokens ``amount`` dollars still buys (a tool round's cap)."""
    if amount <= 0:
        return 0
    if prices.output_price <= 0:
        return 2**31
    return int(amount * MILLION / prices.output_price)


def estimate_usage(*, effort: str, completion_cap: int | None, prompt_tokens: int,
                   visible_text: str) -> Usage:
    """Usage for an attempt that made the model work but reported nothing: the visible
    tokens counted locally plus a reasoning allowance for the effort, capped by what the
    completion cap leaves."""
    visible = count_tokens(visible_text)
    cap = completion_cap or visible
    allowance = REASONING_ALLOWANCE.get(effort, DEFAULT_REASONING_ALLOWANCE)
    reasoning = min(allowance, max(cap - visible, 0))
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=visible + reasoning,
                 reasoning_tokens=reasoning)


def add_usage(total: Usage | None, more: Usage) -> Usage:
    if total is None:
        return more
    return Usage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        cached_tokens=total.cached_tokens + more.cached_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        reasoning_tokens=total.reasoning_tokens + more.reasoning_tokens,
    )
