"""The model profile: everything needed to build a request for one model, as data."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from llm.catalog import KNOWN_EFFORTS, find_entry
from llm.key_envs import validate_key_env
from llm.pricing import exact_cost, valid_tier_prices


class ModelProfile(models.Model):
    """Everything needed to build a request for one model, edited by admins as data."""

    class Provider(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        AZURE = "azure", "Azure OpenAI"
        COMPATIBLE = "compatible", "OpenAI-compatible"

    class ApiStyle(models.TextChoices):
        CHAT = "chat", "Chat Completions"
        RESPONSES = "responses", "Responses (reasoning summaries)"

    class InstructionRole(models.TextChoices):
        DEVELOPER = "developer", "developer"
        SYSTEM = "system", "system"

    name = models.SlugField(max_length=80, unique=True, help_text="Key used by CHAT_MODEL.")
    display_name = models.CharField(max_length=120)
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.OPENAI)
    model = models.CharField(
        max_length=200, help_text="Model name, or the deployment name on Azure OpenAI."
    )
    endpoint = models.URLField(
        blank=True,
        help_text="Base URL. Empty: OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT from the environment.",
    )
    api_version = models.CharField(
        max_length=40, blank=True, help_text="Azure api-version; empty uses the v1 GA path."
    )
    api_key_env = models.CharField(
        "API key environment variable",
        max_length=80,
        blank=True,
        validators=[validate_key_env],
        help_text="Name of the environment variable holding this profile's key (never the "
        "key): LLM_KEY_… or a name listed in PROFILE_KEY_ENVS. Empty: OPENAI_API_KEY / "
        "AZURE_OPENAI_API_KEY.",
    )
    api_style = models.CharField(max_length=12, choices=ApiStyle.choices, default=ApiStyle.CHAT)
    instruction_role = models.CharField(
        max_length=12, choices=InstructionRole.choices, default=InstructionRole.DEVELOPER
    )
    accepted_params = models.JSONField(
        default=list,
        blank=True,
        help_text="Optional request parameters this model accepts, e.g. reasoning_effort, "
        "max_completion_tokens, tools, response_format, temperature.",
    )
    reasoning_efforts = models.JSONField(default=list, blank=True)
    default_effort = models.CharField(max_length=16, blank=True)
    context_window = models.PositiveIntegerField()
    max_output_tokens = models.PositiveIntegerField()
    max_completion_tokens = models.PositiveIntegerField(
        help_text="Default cap on visible + reasoning tokens per turn."
    )
    max_completion_tokens_by_effort = models.JSONField(default=dict, blank=True)
    input_price = models.DecimalField(max_digits=10, decimal_places=4, help_text="USD per 1M")
    cached_input_price = models.DecimalField(
        max_digits=10, decimal_places=4, help_text="USD per 1M"
    )
    output_price = models.DecimalField(max_digits=10, decimal_places=4, help_text="USD per 1M")
    shutdown_date = models.DateField(null=True, blank=True)
    is_active = models.BooleanField(default=True)

    class Origin(models.TextChoices):
        ADMIN = "admin", "Added by an admin"
        CATALOG = "catalog", "From the model catalog"
        DISCOVERED = "discovered", "Discovered (needs prices)"
        ENVIRONMENT = "environment", "From the environment (Azure deployment)"

    origin = models.CharField(max_length=12, choices=Origin.choices, default=Origin.ADMIN)
    catalog_key = models.CharField(
        max_length=120, blank=True,
        help_text="Catalog entry this profile follows, e.g. openai:gpt-6-sol; empty: none.",
    )
    catalog_values = models.JSONField(
        default=dict, blank=True,
        help_text="Field values the catalog last wrote; sync_models updates a field only "
        "while it still holds that value, so admin edits stay.",
    )
    listed_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the provider's GET /v1/models last listed this model.",
    )
    class Verbosity(models.TextChoices):
        PROVIDER_DEFAULT = "", "Provider default"
        LOW = "low", "Low"
        MEDIUM = "medium", "Medium"
        HIGH = "high", "High"

    class ServiceTier(models.TextChoices):
        STANDARD = "", "Standard"
        # Only tiers priced at or below standard: the turn's budget reservation is taken at
        # the standard price, so it always covers the tier's bill.
        FLEX = "flex", "Flex (cheaper, slower, may be unavailable)"

    verbosity = models.CharField(
        max_length=8, choices=Verbosity.choices, blank=True,
        help_text="Responses API text.verbosity: how long the visible answer is.",
    )
    service_tier = models.CharField(
        max_length=16, choices=ServiceTier.choices, blank=True,
        help_text="Responses API service_tier. Answers are billed at the tier the provider "
        "reports serving, using Tier prices; a tier without prices there is billed at the "
        "standard prices.",
    )
    tier_prices = models.JSONField(
        default=dict, blank=True,
        help_text='USD per 1M tokens per service tier, e.g. {"flex": {"input": "0.55", '
        '"cached_input": "0.275", "output": "2.20"}}.',
    )
    # The price card beyond the three base prices (gpt-6.x model pages): cache writes are
    # their own line, and a request above the long-context threshold is billed whole at
    # multiplied rates.
    cache_write_price = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True,
        help_text="USD per 1M prompt tokens written to the cache (30-minute retention); "
        "empty: billed as plain input.",
    )
    long_cache_write_price = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True,
        help_text="USD per 1M prompt tokens written to the 12-hour cache, where published.",
    )
    long_context_threshold = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Input tokens above which the whole request is billed at the long-context "
        "multipliers (272,000 on gpt-6.x); empty: no long-context rate.",
    )
    long_context_input_multiplier = models.DecimalField(
        max_digits=6, decimal_places=3, default=Decimal(1), db_default=Decimal(1),
        help_text="Multiplier on input, cached-input and cache-write prices above the threshold.",
    )
    long_context_output_multiplier = models.DecimalField(
        max_digits=6, decimal_places=3, default=Decimal(1), db_default=Decimal(1),
        help_text="Multiplier on the output price above the threshold.",
    )
    chat_tools_need_effort_none = models.BooleanField(
        default=False, db_default=False,
        help_text="Chat Completions refuses function tools with any reasoning effort but "
        "'none' for this model (gpt-5.4 and later): tools go through the Responses API.",
    )
    successor = models.CharField(
        max_length=120, blank=True, default="", db_default="",
        help_text="Catalog key of the model that replaces this one at its shutdown date.",
    )
    reasoning_summaries = models.BooleanField(
        default=True,
        help_text="Ask a Responses-style model for reasoning summaries (the Thinking section). "
        "Switched off by itself when the provider refuses them (an unverified OpenAI org).",
    )

    class Meta:
        db_table = "conversations_modelprofile"
        ordering = ["display_name"]

    def __str__(self) -> str:
        return self.display_name

    def clean(self) -> None:
        unknown = [e for e in self.reasoning_efforts or [] if e not in KNOWN_EFFORTS]
        if unknown:
            raise ValidationError({"reasoning_efforts": "Unknown reasoning efforts: "
                                   + ", ".join(map(str, unknown)) + ". Use "
                                   + ", ".join(KNOWN_EFFORTS) + "."})
        if self.reasoning_efforts and self.default_effort not in self.reasoning_efforts:
            raise ValidationError({"default_effort": "Must be one of the reasoning efforts."})
        if self.max_completion_tokens > self.max_output_tokens:
            raise ValidationError({"max_completion_tokens": "Cannot exceed max output tokens."})
        self._clean_tier_prices()
        if (self.service_tier or self.verbosity) and self.api_style != self.ApiStyle.RESPONSES:
            raise ValidationError(
                "Verbosity and service tier are sent only by the Responses API: pick API style "
                "Responses or clear them."
            )

    def _clean_tier_prices(self) -> None:
        tiers = self.tier_prices or {}
        valid = valid_tier_prices(tiers)
        if not isinstance(tiers, dict) or set(valid) != set(tiers):
            raise ValidationError({"tier_prices": 'Give each tier as {"input": "…", '
                                   '"cached_input": "…", "output": "…"} in USD per 1M tokens.'})
        for tier, prices in valid.items():
            # The turn's reservation is taken at the standard prices, so no tier may cost more.
            standard_write = (self.input_price if self.cache_write_price is None
                              else self.cache_write_price)
            if (Decimal(prices["input"]) > self.input_price
                    or Decimal(prices["cached_input"]) > self.cached_input_price
                    or Decimal(prices["output"]) > self.output_price
                    or Decimal(prices.get("cache_write", 0)) > standard_write):
                raise ValidationError({"tier_prices": f"The {tier!r} prices must not exceed "
                                       "the standard prices."})

    def offered_efforts(self) -> list[str]:
        """The efforts a turn may ask of this profile, weakest first: the composer offers
        exactly these and a turn asking for another is refused."""
        listed = self.reasoning_efforts or []
        return [effort for effort in KNOWN_EFFORTS if effort in listed]

    def accepts(self, param: str) -> bool:
        return param in (self.accepted_params or [])

    def needs_effort_none_for_chat_tools(self) -> bool:
        """Whether the model takes function tools on Chat Completions only at effort none:
        the profile's flag, or for an OpenAI profile (whose model is a real model id, unlike
        an Azure deployment name) the catalog's word on that model, so that a profile an
        admin typed in follows the same rule as the catalog's."""
        if self.chat_tools_need_effort_none:
            return True
        entry = find_entry("openai", self.model) if self.provider == self.Provider.OPENAI else None
        return entry is not None and entry.chat_tools_need_effort_none

    def chat_tools_refused_at(self, effort: str) -> bool:
        """Whether Chat Completions would refuse this profile's function tools at ``effort``
        (400 "Function tools with reasoning_effort are not supported ... set reasoning_effort
        to 'none'", todays-models.md section 2). An effort that is not sent counts as
        refused: the provider's default effort for these models is not none."""
        if self.api_style != self.ApiStyle.CHAT or not self.accepts("tools"):
            return False
        sends_none = effort == "none" and self.accepts("reasoning_effort")
        return not sends_none and self.needs_effort_none_for_chat_tools()

    def effort_or_default(self, effort: str | None) -> str:
        if effort and effort in (self.reasoning_efforts or []):
            return effort
        return self.default_effort

    def completion_cap(self, effort: str) -> int:
        by_effort: dict[str, Any] = self.max_completion_tokens_by_effort or {}
        return int(by_effort.get(effort, self.max_completion_tokens))

    def is_retired(self, on: dt.date | None = None) -> bool:
        return self.shutdown_date is not None and self.shutdown_date <= (
            on or timezone.localdate()
        )

    def cost(self, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> Decimal:
        """Dollar cost at today's prices; reasoning tokens are already inside
        completion_tokens (llm.pricing holds the formula)."""
        return exact_cost(self, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
                          completion_tokens=completion_tokens)

    def stop_reasoning_summaries(self) -> None:
        """Remember that the provider refuses this profile's reasoning summaries; an admin
        turns them back on (e.g. once the OpenAI org is verified)."""
        # Every answer starting at that moment meets the same refusal: the conditional
        # update writes the row once, and touches no other field an admin may be saving.
        ModelProfile.objects.filter(pk=self.pk, reasoning_summaries=True).update(
            reasoning_summaries=False
        )
        self.reasoning_summaries = False
