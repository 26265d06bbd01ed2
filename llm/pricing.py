"""The one place that turns tokens into dollars, and guesses tokens nobody reported.

Every price calculation in the product goes through here: the worst case a turn reserves,
the actual cost it settles to, the flagged estimate for a stopped or interrupted answer,
how many completion tokens a remaining reservation still affords, and the cost ranges the
composer shows before sending. Prices are per million tokens. They come from a
``PriceSource``: a model profile (today's prices) or the ``Prices`` snapshotted on an
answer when its turn started, so an admin editing a price mid-answer changes nothing for
that answer.

The price card of today's models (docs/models.md): cache writes have their own price; a
request whose input passes the long-context threshold is billed whole at multiplied
rates, decided per request (a turn of several requests keeps each one's usage, see
``Usage.requests``); a served tier's prices replace the standard ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from llm.tokens import count_tokens
from llm.types import Usage

MILLION = Decimal(1_000_000)
MICRO = Decimal("0.000001")  # every money column has decimal_places=6

# Without a usage chunk (stop, crash, dropped stream) the hidden reasoning is unknown;
# bill a conservative allowance per effort rather than nothing, and flag it.
REASONING_ALLOWANCE = {
    # `none` does not reason at all: the visible text is the whole completion.
    "none": 0,
    "minimal": 256,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    # xhigh and max reason much longer than high (minutes, not seconds); the completion
    # cap still bounds what is billed.
    "xhigh": 65536,
    "max": 131072,
}
DEFAULT_REASONING_ALLOWANCE = 4096


class PriceSource(Protocol):
    """A model profile (today's prices) or an answer's ``Prices`` snapshot."""

    @property
    def input_price(self) -> Decimal: ...

    @property
    def cached_input_price(self) -> Decimal: ...

    @property
    def output_price(self) -> Decimal: ...


ONE = Decimal(1)


def _decimal_or_none(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, as snapshotted on an answer at reservation."""

    input_price: Decimal
    cached_input_price: Decimal
    output_price: Decimal
    # Other service tiers' prices ({"flex": {"input": …, "cached_input": …, "output": …,
    # optionally "cache_write": …, "long_cache_write": …}}), snapshotted with the standard
    # ones so a turn is billed at the tier that served it.
    tiers: dict[str, dict[str, str]] = field(default_factory=dict, compare=False)
    # Prompt tokens written to the cache (30-minute and 12-hour retention); None: billed
    # as plain input (and a 12-hour write at the 30-minute price).
    cache_write_price: Decimal | None = None
    long_cache_write_price: Decimal | None = None
    # A request with more input tokens than this is billed whole at the multiplied rates
    # (input, cached input and cache writes × the input multiplier; output × the output
    # multiplier). None: no long-context rate.
    long_context_threshold: int | None = None
    long_context_input_multiplier: Decimal = ONE
    long_context_output_multiplier: Decimal = ONE

    @classmethod
    def of(cls, source: PriceSource) -> Prices:
        tiers = getattr(source, "tier_prices", None)
        threshold = getattr(source, "long_context_threshold", None)
        return cls(
            Decimal(source.input_price), Decimal(source.cached_input_price),
            Decimal(source.output_price), valid_tier_prices(tiers),
            cache_write_price=_decimal_or_none(getattr(source, "cache_write_price", None)),
            long_cache_write_price=_decimal_or_none(getattr(source, "long_cache_write_price", None)),
            long_context_threshold=None if threshold is None else int(threshold),
            long_context_input_multiplier=Decimal(
                getattr(source, "long_context_input_multiplier", None) or ONE),
            long_context_output_multiplier=Decimal(
                getattr(source, "long_context_output_multiplier", None) or ONE),
        )

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> Prices:
        # Snapshots taken before the price card knew cache writes and long context lack
        # those keys: such answers are priced as they always were.
        long_context = snapshot.get("long_context") or {}
        threshold = long_context.get("threshold")
        return cls(
            Decimal(snapshot["input"]), Decimal(snapshot["cached_input"]),
            Decimal(snapshot["output"]), valid_tier_prices(snapshot.get("tiers")),
            cache_write_price=_decimal_or_none(snapshot.get("cache_write")),
            long_cache_write_price=_decimal_or_none(snapshot.get("long_cache_write")),
            long_context_threshold=None if threshold is None else int(threshold),
            long_context_input_multiplier=Decimal(long_context.get("input", ONE)),
            long_context_output_multiplier=Decimal(long_context.get("output", ONE)),
        )

    def snapshot(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "input": str(self.input_price), "cached_input": str(self.cached_input_price),
            "output": str(self.output_price),
        }
        if self.cache_write_price is not None:
            values["cache_write"] = str(self.cache_write_price)
        if self.long_cache_write_price is not None:
            values["long_cache_write"] = str(self.long_cache_write_price)
        if self.long_context_threshold is not None:
            values["long_context"] = {
                "threshold": self.long_context_threshold,
                "input": str(self.long_context_input_multiplier),
                "output": str(self.long_context_output_multiplier),
            }
        if self.tiers:
            values["tiers"] = self.tiers
        return values

    def at_tier(self, tier: str) -> Prices:
        """The prices of the tier the provider reported serving; the standard prices for
        the default tier, an unreported one, or one without prices (documented). The
        long-context rule applies on top of a tier's prices; a tier without its own
        cache-write prices keeps the standard ones."""
        prices = self.tiers.get(tier)
        if not prices:
            return replace(self, tiers={})
        return replace(
            self, tiers={}, input_price=Decimal(prices["input"]),
            cached_input_price=Decimal(prices["cached_input"]),
            output_price=Decimal(prices["output"]),
            cache_write_price=_decimal_or_none(prices.get("cache_write", self.cache_write_price)),
            long_cache_write_price=_decimal_or_none(
                prices.get("long_cache_write", self.long_cache_write_price)),
        )

    def billable_tiers(self) -> tuple[Prices, ...]:
        """The standard prices and each priced tier's: an answer is billed at one of
        them, the one the provider reports serving."""
        return (self, *(self.at_tier(tier) for tier in self.tiers))

    def is_long(self, prompt_tokens: int) -> bool:
        """Whether a request of this many input tokens is billed at the long-context rates
        (strictly above the threshold: exactly at it still uses the short rates)."""
        return self.long_context_threshold is not None and prompt_tokens > self.long_context_threshold

    def for_request(self, prompt_tokens: int) -> Rates:
        """The rates one request of ``prompt_tokens`` input tokens is billed at."""
        cache_write = self.input_price if self.cache_write_price is None else self.cache_write_price
        long_write = cache_write if self.long_cache_write_price is None else self.long_cache_write_price
        rates = Rates(self.input_price, self.cached_input_price, cache_write, long_write,
                      self.output_price)
        if not self.is_long(prompt_tokens):
            return rates
        into, out = self.long_context_input_multiplier, self.long_context_output_multiplier
        return Rates(rates.input * into, rates.cached_input * into, rates.cache_write * into,
                     rates.long_cache_write * into, rates.output * out)


@dataclass(frozen=True)
class Rates:
    """USD per million tokens for one request, the long-context rule already applied."""

    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    long_cache_write: Decimal
    output: Decimal

    @property
    def dearest_prompt(self) -> Decimal:
        """What a prompt token can cost at most: as plain input or written to the cache
        (requests never ask for 12-hour retention, so a 12-hour write is not counted)."""
        return max(self.input, self.cache_write)


TIER_KEYS = ("input", "cached_input", "output")
OPTIONAL_TIER_KEYS = ("cache_write", "long_cache_write")


def valid_tier_prices(tiers: Any) -> dict[str, dict[str, str]]:
    """Tier prices with all three prices as decimals (cache-write prices optional);
    anything else is left out."""
    valid: dict[str, dict[str, str]] = {}
    if not isinstance(tiers, dict):
        return valid
    for tier, prices in tiers.items():
        if not isinstance(prices, dict):
            continue
        try:
            values = {key: str(Decimal(str(prices[key]))) for key in TIER_KEYS}
            values.update({key: str(Decimal(str(prices[key]))) for key in OPTIONAL_TIER_KEYS
                           if prices.get(key) not in (None, "")})
        except (KeyError, ArithmeticError, ValueError):
            continue
        if all(Decimal(v).is_finite() and Decimal(v) >= 0 for v in values.values()):
            valid[str(tier)] = values
    return valid


def _as_prices(source: PriceSource) -> Prices:
    return source if isinstance(source, Prices) else Prices.of(source)


def prices_for_answer(*, snapshot: dict[str, Any] | None, profile: PriceSource | None) -> Prices:
    """The answer's snapshotted prices; the profile's only for answers saved before
    snapshots were taken at reservation."""
    if snapshot:
        return Prices.from_snapshot(snapshot)
    if profile is None:
        raise ValueError("an answer without a price snapshot needs its profile")
    return Prices.of(profile)


def exact_cost(prices: PriceSource, *, prompt_tokens: int, cached_tokens: int,
               completion_tokens: int, cache_write_tokens: int = 0,
               cache_write_12h_tokens: int = 0) -> Decimal:
    """Unrounded dollars for one request; reasoning tokens are already inside
    ``completion_tokens``. ``prompt_tokens`` holds the cached and the cache-written ones
    (priced at their own rates); the whole request is at the long-context rates when its
    input passes the threshold."""
    rates = _as_prices(prices).for_request(prompt_tokens)
    uncached = max(prompt_tokens - cached_tokens - cache_write_tokens, 0)
    long_writes = min(cache_write_12h_tokens, cache_write_tokens)
    return (
        uncached * rates.input
        + cached_tokens * rates.cached_input
        + (cache_write_tokens - long_writes) * rates.cache_write
        + long_writes * rates.long_cache_write
        + completion_tokens * rates.output
    ) / MILLION


def _request_cost(prices: Prices, usage: Usage) -> Decimal:
    if usage.estimated:
        # Nothing was reported: every prompt token as if written to the cache or uncached,
        # whichever costs more, never less than the provider could bill.
        rates = prices.for_request(usage.prompt_tokens)
        return (usage.prompt_tokens * rates.dearest_prompt
                + usage.completion_tokens * rates.output) / MILLION
    return exact_cost(
        prices, prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
        completion_tokens=usage.completion_tokens, cache_write_tokens=usage.cache_write_tokens,
        cache_write_12h_tokens=usage.cache_write_12h_tokens,
    )


def usage_cost(prices: PriceSource, usage: Usage) -> Decimal:
    """What a turn (or title) with this usage is charged, to the micro-dollar: the sum
    of its requests' costs, each at the rates its own input size falls in."""
    as_prices = _as_prices(prices)
    return sum(
        (_request_cost(as_prices, request) for request in usage.requests or (usage,)), Decimal(0)
    ).quantize(MICRO)


def worst_case_cost(prices: PriceSource, *, prompt_tokens: int, completion_cap: int) -> Decimal:
    """Every prompt token at the dearer of the input and cache-write prices, the whole
    cap spent (reasoning included), at the long-context rates when the prompt passes the
    threshold and at the dearest tier that could be billed; rounded up so a reservation
    never holds a fraction of a micro-dollar too little."""
    costs = []
    for tier_prices in _as_prices(prices).billable_tiers():
        rates = tier_prices.for_request(prompt_tokens)
        costs.append(prompt_tokens * rates.dearest_prompt + completion_cap * rates.output)
    return (max(costs) / MILLION).quantize(MICRO, rounding=ROUND_CEILING)


def range_cost(prices: PriceSource, *, prompt_tokens: int, completion_tokens: Decimal) -> Decimal:
    """A point of the pre-send cost range (prompt priced uncached)."""
    rates = _as_prices(prices).for_request(prompt_tokens)
    cost = (prompt_tokens * rates.input + completion_tokens * rates.output) / MILLION
    return cost.quantize(MICRO, rounding=ROUND_HALF_UP)


def affordable_completion_tokens(prices: PriceSource, amount: Decimal, *,
                                 prompt_tokens: int = 0) -> int:
    """How many output tokens ``amount`` dollars still buys (a tool round's cap), at the
    output rate of a request of ``prompt_tokens`` input tokens."""
    if amount <= 0:
        return 0
    output = _as_prices(prices).for_request(prompt_tokens).output
    if output <= 0:
        return 2**31
    return int(amount * MILLION / output)


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
                 reasoning_tokens=reasoning, estimated=True)


def add_usage(total: Usage | None, more: Usage) -> Usage:
    """The sum of two usages, keeping each request's own (the long-context rule prices
    every request by its own input size)."""
    if total is None:
        return more
    return Usage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        cached_tokens=total.cached_tokens + more.cached_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        reasoning_tokens=total.reasoning_tokens + more.reasoning_tokens,
        cache_write_tokens=total.cache_write_tokens + more.cache_write_tokens,
        cache_write_12h_tokens=total.cache_write_12h_tokens + more.cache_write_12h_tokens,
        requests=(*(total.requests or (total,)), *(more.requests or (more,))),
    )
