from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from conversations.catalog import KNOWN_EFFORTS, find_entry
from conversations.key_envs import validate_key_env

MILLION = Decimal(1_000_000)


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
        from billing.pricing import valid_tier_prices

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
        completion_tokens (billing.pricing holds the formula)."""
        from billing.pricing import exact_cost

        return exact_cost(self, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
                          completion_tokens=completion_tokens)


class ConversationQuerySet(models.QuerySet["Conversation"]):
    def owned_by(self, user: Any) -> ConversationQuerySet:
        return self.filter(user=user)

    def not_deleted(self) -> ConversationQuerySet:
        # Deleted conversations keep their rows (erased) so usage reports still add up.
        return self.filter(deleted_at__isnull=True)


class Conversation(models.Model):
    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="conversations"
    )
    # SET_NULL: deleting a person erases their conversations' text first
    # (accounts.erasure) and keeps the emptied rows, whose answers carry the org's usage.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="conversations",
    )
    profile = models.ForeignKey(ModelProfile, on_delete=models.PROTECT, related_name="+")
    title = models.CharField(max_length=200, blank=True)
    title_generated = models.BooleanField(default=False)
    custom_instructions = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The last message of the branch on screen; conversations/tree.py walks up from it.
    current_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # Where an imported conversation came from ("chatgpt") and its id there: importing the
    # same export twice finds these and adds nothing.
    import_source = models.CharField(max_length=16, blank=True)
    import_id = models.CharField(max_length=100, blank=True)

    # Conversation list state (conversations/listing.py). A deleted conversation's text is
    # erased but its row and its answers' token counts and costs stay: the usage report
    # is summed from them and must keep matching what the budgets were charged.
    pinned_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["user", "organization", "-updated_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "organization", "import_source", "import_id"],
                condition=~Q(import_id=""),
                name="conversation_unique_import",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"

    @property
    def display_title(self) -> str:
        return self.title or "New conversation"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        STREAMING = "streaming", "Streaming"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Stopped"
        INTERRUPTED = "interrupted", "Interrupted"

    FINAL_STATUSES = (Status.DONE, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED)
    LIVE_STATUSES = (Status.PENDING, Status.STREAMING)

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # The message before this one on its branch: an answer's parent is its question, a
    # question's parent is the previous answer (null for the first question).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DONE)
    client_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    # Assistant-only facts: which model answered, how, and what it cost.
    profile = models.ForeignKey(
        ModelProfile, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    model_name = models.CharField(max_length=200, blank=True)
    reasoning_effort = models.CharField(max_length=16, blank=True)
    max_completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    refusal = models.TextField(blank=True)
    reasoning_summary = models.TextField(blank=True)
    service_tier = models.CharField(
        max_length=16, blank=True, help_text="The service tier the provider reported serving."
    )
    reasoning_items = models.JSONField(
        default=list, blank=True,
        help_text="The provider's encrypted reasoning items that led to this answer "
        "(Responses API, store=false), sent back before it on later turns.",
    )
    error_code = models.CharField(max_length=32, blank=True)
    error_detail = models.TextField(blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    history_truncated = models.PositiveIntegerField(
        default=0, help_text="How many older turns were left out to fit the context window."
    )
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0, db_default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    price_snapshot = models.JSONField(default=dict, blank=True)
    stream_seq = models.PositiveIntegerField(default=0)
    # A background response (Responses API) survives the worker that streams it: its id
    # and the provider's sequence number of the last event the checkpointed text covers
    # let the next worker resume the stream right after the checkpoint.
    provider_response_id = models.CharField(
        max_length=200, blank=True,
        help_text="The provider's id of the background response this answer is streaming.",
    )
    provider_seq = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="The provider's sequence_number of the last event the saved text covers.",
    )
    # Each claim (the first, and a resume after a worker died) counts one up; a worker's
    # writes name its own count, so one that outlived its lease cannot overwrite the
    # worker that took the answer over.
    claims = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "created_at"]),
            models.Index(
                fields=["lease_expires_at"],
                name="live_message_lease",
                condition=Q(status__in=["pending", "streaming"]),
            ),
            # Every turn counts the answers waiting for a worker (back-pressure) and the
            # sender's live answers: these read one entry per such answer, not every
            # version of every live row the lease index holds until a vacuum.
            models.Index(fields=["id"], name="waiting_answer",
                         condition=Q(status="pending", role="assistant")),
            models.Index(fields=["conversation"], name="live_answer",
                         condition=Q(status__in=["pending", "streaming"], role="assistant")),
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.pk} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES

    def usage_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


class DataJob(models.Model):
    """An import or an "Export my data" running in a worker (conversations/datajobs.py)."""

    class Kind(models.TextChoices):
        IMPORT = "import", "Import"
        EXPORT = "export", "Export my data"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"

    LIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="data_jobs"
    )
    # The org an import goes into (exports cover every org of the person).
    organization = models.ForeignKey(
        "accounts.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    # The private file (upload or finished ZIP), relative to DATA_JOBS_DIR; made by the
    # server, never from a name a person sent.
    file_name = models.CharField(max_length=200, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(null=True, blank=True)
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Moves with every step of progress: a running job whose worker died stops moving.
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "kind", "-created_at"])]
        constraints = [
            # One import and one export at a time per person, whatever the race.
            models.UniqueConstraint(
                fields=["user", "kind"],
                condition=Q(status__in=["queued", "running"]),
                name="one_live_data_job_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES
