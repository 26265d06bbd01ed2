from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone

from accounts.erasure import person_data_erasing
from llm.models import ModelProfile

MILLION = Decimal(1_000_000)


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
    # Not indexed alone (nor updated_at): the list's (user, organization, -updated_at)
    # index serves every lookup by person, and retention's serves the org's oldest. Every
    # turn moves updated_at, so each index more is one more entry written per turn.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="conversations", db_index=False,
    )
    profile = models.ForeignKey(ModelProfile, on_delete=models.PROTECT, related_name="+")
    title = models.CharField(max_length=200, blank=True)
    title_generated = models.BooleanField(default=False)
    custom_instructions = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # The last message of the branch on screen; conversations/tree.py walks up from it.
    # No database constraint (its check on every turn protected nothing the messages'
    # own constraint to their conversation does not): docs/decisions.md#0045.
    current_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_constraint=False,
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
        indexes = [
            models.Index(fields=["user", "organization", "-updated_at"]),
            # Retention (conversations.retention) takes an org's oldest undeleted
            # conversations a batch at a time; deleted rows stay and must not be walked.
            models.Index(fields=["organization", "updated_at"], name="retention_candidate",
                         condition=Q(deleted_at__isnull=True)),
        ]
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

    # Not indexed alone: the (conversation, created_at) index serves every lookup by
    # conversation, and each index more is written on every insert and most updates.
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    # The message before this one on its branch: an answer's parent is its question, a
    # question's parent is the previous answer (null for the first question). Always a
    # message of the same conversation, read under its lock: no database constraint
    # (docs/decisions.md#0045); deleting cascades in Django, as every FK's does.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children",
        db_constraint=False,
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    # ``content``'s share of a prompt (llm.tokens.message_tokens), counted once when
    # the text is final: a question when it is saved, an answer when it finishes, a copy
    # when a shared conversation is continued or an export imported. Every
    # later turn's prompt estimate and context cut add these up instead of tokenizing the
    # whole conversation again. NULL (a live answer, a row from before the
    # column): counted from the text when needed.
    content_tokens = models.PositiveIntegerField(null=True, blank=True, editable=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DONE)
    client_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    # Assistant-only facts: which model answered, how, and what it cost. The profile is
    # protected in Django (PROTECT); no database constraint, whose check locked the one
    # profile row every answer shares (docs/decisions.md#0045).
    profile = models.ForeignKey(
        ModelProfile, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        db_constraint=False,
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


@receiver(person_data_erasing, dispatch_uid="conversations.erase_deleted_persons_conversations")
def _erase_persons_conversations(sender: Any, user: Any, now: Any, **kwargs: Any) -> None:
    """A person being deleted (accounts.erasure, once their answers ended): every
    conversation of theirs is emptied and kept, deleted, without its text."""
    conversations = Conversation.objects.filter(user=user)
    Message.objects.filter(conversation__in=conversations).update(
        content="", content_tokens=None, refusal="", reasoning_summary="", tool_calls=[],
        error_detail="", client_id="",
    )
    conversations.update(title="", custom_instructions="", import_source="", import_id="",
                         pinned_at=None)
    conversations.filter(deleted_at__isnull=True).update(deleted_at=now)
