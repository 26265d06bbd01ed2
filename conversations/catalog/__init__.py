"""The model catalog: what current reasoning models accept and cost, as data in the repo.

One JSON file per provider family (``openai.json``, ``azure.json``). Every entry names its
sources and what could not be confirmed; the files' ``unconfirmed`` lists say the rest.
This module only reads and checks them; ``conversations.catalog.sync`` writes profiles.
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
    "cached_input_price", "output_price", "shutdown_date",
)
MONEY_FIELDS = ("input_price", "cached_input_price", "output_price")


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
        return current is not None and recorded is not None and Decimal(current) == Decimal(recorded)
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
    )


def _tier_prices(prices: dict[str, Any], raw: dict[str, Any], where: str) -> dict[str, dict[str, str]]:
    """Checked like the standard prices, and never above them: a turn's reservation is
    taken at the standard prices and must cover the tier's bill."""
    tiers: dict[str, dict[str, str]] = {}
    for tier, values in (prices.get("tiers") or {}).items():
        checked = {key: _money(values[key], f"{where} tier {tier}") for key in ("input", "cached_input", "output")}
        if any(checked[key] > _money(prices[key], where) for key in checked):
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
    return entries


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
