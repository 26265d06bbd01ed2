"""The model catalog: what current reasoning models accept and cost, as data in the repo.

One JSON file per provider family (``openai.json``, ``azure.json``). Every entry names its
sources and what could not be confirmed; the files' ``unconfirmed`` lists say the rest.
This module only reads and checks them; ``llm.catalog.sync`` writes profiles.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

FAMILIES = ("openai", "azure")
_DIR = Path(__file__).resolve().parent
KNOWN_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
API_STYLES = ("chat", "responses")

# The ModelProfile fields a catalog entry writes, in a stable order.
PROFILE_FIELDS = (
    "display_name", "model", "api_style", "instruction_role", "accepted_params",
    "reasoning_efforts", "default_effort", "context_window", "max_output_tokens",
    "max_completion_tokens", "max_completion_tokens_by_effort", "input_price",
    "cache_write_price", "long_cache_write_price", "long_context_threshold",
    "long_context_input_multiplier", "long_context_output_multiplier",
    "cached_input_price", "output_price", "shutdown_date", "successor",
    "chat_tools_need_effort_none",
)
# Decimal fields (prices and the price card's multipliers): recorded as strings, compared
# as numbers.
MONEY_FIELDS = (
    "input_price", "cached_input_price", "output_price", "cache_write_price",
    "long_cache_write_price", "long_context_input_multiplier", "long_context_output_multiplier",
)


class CatalogError(ValueError):
    """A catalog file that does not say what a profile needs."""


@dataclass(frozen=True)
class CatalogEntry:
    family: str
    name: str
    model: str
    display_name: str
    released: dt.date | None
    api_style: str
    instruction_role: str
    accepted_params: tuple[str, ...]
    reasoning_efforts: tuple[str, ...]
    default_effort: str
    context_window: int
    max_output_tokens: int
    max_completion_tokens_by_effort: dict[str, int]
    input_price: Decimal
    cached_input_price: Decimal
    output_price: Decimal
    prices_confirmed: bool
    shutdown_date: dt.date | None
    snapshots: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    # Per service tier (flex): {"flex": {"input": "…", "cached_input": "…", "output": "…"}}.
    tier_prices: dict[str, dict[str, str]] = field(default_factory=dict)
    # The price card beyond the three base prices (prices.cache_write, cache_write_12h,
    # long_context, tier_multipliers; docs/models.md): None where no source gives it.
    cache_write_price: Decimal | None = None
    long_cache_write_price: Decimal | None = None
    long_context_threshold: int | None = None
    long_context_input_multiplier: Decimal = Decimal(1)
    long_context_output_multiplier: Decimal = Decimal(1)
    # Every published tier's multiplier of the standard prices, the dearer ones included
    # (those are not billable: see ``_tier_prices``).
    tier_multipliers: dict[str, Decimal] = field(default_factory=dict)
    # The catalog key (``family:model``) of the entry that replaces this one at its
    # shutdown date; conversations.retirements moves orgs to it.
    successor: str = ""
    # Chat Completions refuses function tools with any reasoning effort but "none" for
    # this model (gpt-5.4 and later): its tools go through the Responses API.
    chat_tools_need_effort_none: bool = False

    @property
    def key(self) -> str:
        return f"{self.family}:{self.model}"

    @property
    def model_ids(self) -> tuple[str, ...]:
        """Every id a provider's /v1/models may list for this model."""
        return (self.model, *self.snapshots)

    def is_retired(self, on: dt.date) -> bool:
        return self.shutdown_date is not None and self.shutdown_date <= on

    def profile_values(self) -> dict[str, Any]:
        """The profile fields this entry sets, in their JSON form (see ``to_json``)."""
        return {
            "display_name": self.display_name,
            "model": self.model,
            "api_style": self.api_style,
            "instruction_role": self.instruction_role,
            "accepted_params": list(self.accepted_params),
            "reasoning_efforts": list(self.reasoning_efforts),
            "default_effort": self.default_effort,
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "max_completion_tokens": self.max_completion_tokens_by_effort.get(
                self.default_effort, min(25_000, self.max_output_tokens)
            ),
            "max_completion_tokens_by_effort": dict(self.max_completion_tokens_by_effort),
            "input_price": to_json("input_price", self.input_price),
            "cached_input_price": to_json("cached_input_price", self.cached_input_price),
            "output_price": to_json("output_price", self.output_price),
            "shutdown_date": to_json("shutdown_date", self.shutdown_date),
            "tier_prices": {tier: dict(p) for tier, p in self.tier_prices.items()},
            "cache_write_price": to_json("cache_write_price", self.cache_write_price),
            "long_cache_write_price": to_json("long_cache_write_price", self.long_cache_write_price),
            "long_context_threshold": self.long_context_threshold,
            "long_context_input_multiplier": to_json(
                "long_context_input_multiplier", self.long_context_input_multiplier),
            "long_context_output_multiplier": to_json(
                "long_context_output_multiplier", self.long_context_output_multiplier),
            "successor": self.successor,
            "chat_tools_need_effort_none": self.chat_tools_need_effort_none,
        }


def to_json(name: str, value: Any) -> Any:
    """A profile field's value as the catalog records it (money and dates as strings)."""
    if value is None:
        return None
    if name in MONEY_FIELDS:
        return f"{Decimal(value).normalize():f}"
    if name == "shutdown_date":
        return value.isoformat()
    return value


def same_value(name: str, current: Any, recorded: Any) -> bool:
    """Whether a profile's current value is the one the catalog recorded; money compares
    as numbers, so 1.1000 from the database equals the recorded "1.1"."""
    if name in MONEY_FIELDS:
        if current is None or recorded is None:
            return current is None and recorded is None
        return Decimal(current) == Decimal(recorded)
    return to_json(name, current) == recorded


def _money(raw: Any, where: str) -> Decimal:
    try:
        value = Decimal(str(raw))
    except ArithmeticError as exc:
        raise CatalogError(f"{where}: {raw!r} is not a price") from exc
    if not value.is_finite() or value < 0:
        raise CatalogError(f"{where}: {raw!r} is not a price")
    return value


def _date(raw: Any, where: str) -> dt.date | None:
    if raw is None:
        return None
    try:
        return dt.date.fromisoformat(str(raw))
    except ValueError as exc:
        raise CatalogError(f"{where}: {raw!r} is not a date (YYYY-MM-DD)") from exc


def parse_entry(family: str, raw: dict[str, Any]) -> CatalogEntry:
    """One checked entry; a catalog file with a malformed entry fails loudly, not later."""
    where = f"{family}.json {raw.get('name', '?')}"
    efforts = tuple(raw["reasoning_efforts"])
    unknown = [e for e in efforts if e not in KNOWN_EFFORTS]
    if unknown:
        raise CatalogError(f"{where}: unknown reasoning efforts {unknown}")
    if efforts and raw["default_effort"] not in efforts:
        raise CatalogError(f"{where}: default effort {raw['default_effort']!r} is not offered")
    if raw["api_style"] not in API_STYLES:
        raise CatalogError(f"{where}: api_style must be one of {API_STYLES}")
    if not raw.get("sources"):
        raise CatalogError(f"{where}: an entry must cite its sources")
    prices = raw["prices"]
    if prices.get("cached_input") is None:
        raise CatalogError(f"{where}: no cached-input price; leave the model out instead")
    by_effort = {str(k): int(v) for k, v in raw["max_completion_tokens_by_effort"].items()}
    if any(v > raw["max_output_tokens"] for v in by_effort.values()):
        raise CatalogError(f"{where}: a completion cap exceeds max_output_tokens")
    return CatalogEntry(
        family=family,
        name=raw["name"],
        model=raw["model"],
        display_name=raw["display_name"],
        released=_date(raw.get("released"), where),
        api_style=raw["api_style"],
        instruction_role=raw.get("instruction_role", "developer"),
        accepted_params=tuple(raw["accepted_params"]),
        reasoning_efforts=efforts,
        default_effort=raw["default_effort"],
        context_window=int(raw["context_window"]),
        max_output_tokens=int(raw["max_output_tokens"]),
        max_completion_tokens_by_effort=by_effort,
        input_price=_money(prices["input"], where),
        cached_input_price=_money(prices["cached_input"], where),
        output_price=_money(prices["output"], where),
        prices_confirmed=bool(prices.get("confirmed")),
        shutdown_date=_date(raw.get("shutdown_date"), where),
        snapshots=tuple(raw.get("snapshots", ())),
        sources=tuple(raw["sources"]),
        notes=tuple(raw.get("notes", ())),
        tier_prices=_tier_prices(prices, raw, where),
        **_price_card(prices, where),
        successor=str(raw.get("successor") or ""),
        chat_tools_need_effort_none=_chat_tools_rule(raw, where),
    )


def _chat_tools_rule(raw: dict[str, Any], where: str) -> bool:
    """``chat_tools_need_effort_none``: a boolean when present. An entry with the rule that
    offers tools must be Responses-style: on Chat Completions its tools would be dropped
    from every answer at a reasoning effort other than none."""
    rule = raw.get("chat_tools_need_effort_none", False)
    if not isinstance(rule, bool):
        raise CatalogError(f"{where}: chat_tools_need_effort_none must be true or false")
    if rule and "tools" in raw["accepted_params"] and raw["api_style"] != "responses":
        raise CatalogError(f"{where}: a model that takes tools on Chat Completions only at "
                           "effort none must use api_style responses")
    return rule


def _price_card(prices: dict[str, Any], where: str) -> dict[str, Any]:
    """The entry's cache-write prices, long-context rule and tier multipliers."""
    card: dict[str, Any] = {}
    for key, name in (("cache_write", "cache_write_price"), ("cache_write_12h", "long_cache_write_price")):
        if prices.get(key) is not None:
            card[name] = _money(prices[key], f"{where} {key}")
    long_context = prices.get("long_context")
    if long_context:
        threshold = long_context.get("threshold")
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            raise CatalogError(f"{where}: long_context.threshold must be a positive number of tokens")
        card["long_context_threshold"] = threshold
        for key, name in (("input_multiplier", "long_context_input_multiplier"),
                          ("output_multiplier", "long_context_output_multiplier")):
            card[name] = _money(long_context[key], f"{where} long_context.{key}")
    card["tier_multipliers"] = {
        str(tier): _money(value, f"{where} tier multiplier {tier}")
        for tier, value in (prices.get("tier_multipliers") or {}).items()
    }
    return card


def _tier_prices(prices: dict[str, Any], raw: dict[str, Any], where: str) -> dict[str, dict[str, str]]:
    """Checked like the standard prices, and never above them: a turn's reservation is
    taken at the standard prices and must cover the tier's bill.

    A tier with a multiplier (prices.tier_multipliers) and no explicit prices gets the
    standard prices times it, cache writes included; an explicit tier gets its missing
    cache-write prices that way. Tiers dearer than standard (priority, ultrafast) are
    recorded but get no prices: no profile requests them, and one the provider reports
    anyway is billed at the standard prices, which the reservation covers.
    """
    card = _price_card(prices, where)
    standard = {"input": _money(prices["input"], where),
                "cached_input": _money(prices["cached_input"], where),
                "output": _money(prices["output"], where)}
    writes = {"cache_write": card.get("cache_write_price"),
              "long_cache_write": card.get("long_cache_write_price")}
    tiers: dict[str, dict[str, str]] = {}
    explicit = prices.get("tiers") or {}
    multipliers = card["tier_multipliers"]
    for tier in [*explicit, *(t for t in multipliers if t not in explicit)]:
        multiplier = multipliers.get(tier)
        if tier in explicit:
            checked = {key: _money(explicit[tier][key], f"{where} tier {tier}") for key in standard}
        elif multiplier is not None and multiplier <= 1:
            checked = {key: value * multiplier for key, value in standard.items()}
        else:
            continue
        if multiplier is not None and multiplier <= 1:
            checked.update({key: value * multiplier for key, value in writes.items()
                            if value is not None})
        if any(checked[key] > standard[key] for key in standard) or any(
                key in checked and value is not None and checked[key] > value
                for key, value in writes.items()):
            raise CatalogError(f"{where}: {tier} prices exceed the standard prices")
        tiers[str(tier)] = {key: f"{value.normalize():f}" for key, value in checked.items()}
    return tiers


@cache
def load_catalog(family: str) -> tuple[CatalogEntry, ...]:
    if family not in FAMILIES:
        raise CatalogError(f"No catalog for provider family {family!r}")
    data = json.loads((_DIR / f"{family}.json").read_text(encoding="utf-8"))
    entries = tuple(parse_entry(family, raw) for raw in data["models"])
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise CatalogError(f"{family}.json: duplicate entry names")
    _check_successors(family, entries)
    return entries


def _check_successors(family: str, entries: tuple[CatalogEntry, ...]) -> None:
    """Every entry with a shutdown date names its successor: another entry of the same
    file (so the same provider) that is still served after the old one shuts down. Orgs
    are moved to it the day before the shutdown, so a successor shutting down the same
    day would be no successor."""
    by_key = {entry.key: entry for entry in entries}
    for entry in entries:
        where = f"{family}.json {entry.name}"
        if not entry.successor:
            if entry.shutdown_date is not None:
                raise CatalogError(f"{where}: a model with a shutdown date must name its successor")
            continue
        successor = by_key.get(entry.successor)
        if successor is None:
            raise CatalogError(f"{where}: successor {entry.successor!r} is not a {family} catalog key")
        if successor is entry:
            raise CatalogError(f"{where}: a model cannot succeed itself")
        if entry.shutdown_date is not None and successor.shutdown_date is not None \
                and successor.shutdown_date <= entry.shutdown_date:
            raise CatalogError(f"{where}: successor {entry.successor!r} shuts down on "
                               f"{successor.shutdown_date}, not after {entry.shutdown_date}")


def find_entry(family: str, name_or_model: str) -> CatalogEntry | None:
    """The entry named (with or without its family prefix, e.g. ``gpt-5-4`` for
    ``azure-gpt-5-4``), or serving the model id or snapshot, in one family."""
    wanted = name_or_model.strip()
    for entry in load_catalog(family):
        names = (entry.name, entry.name.removeprefix(f"{family}-"))
        if wanted in names or wanted in entry.model_ids:
            return entry
    return None


def newest_first(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    """Newest release first; entries with no confirmed release date count as oldest, and
    ties keep the file's order."""
    return sorted(entries, key=lambda e: e.released or dt.date.min, reverse=True)
