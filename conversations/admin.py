from __future__ import annotations

from django.contrib import admin

from conversations.models import Conversation, Message


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    # Admins see spend and metadata, not what people wrote.
    list_display = ["id", "user", "organization", "profile", "created_at", "updated_at"]
    list_filter = ["organization", "profile"]
    search_fields = ["user__email"]
    raw_id_fields = ["user", "organization"]
    exclude = ["title", "custom_instructions"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "status", "model_name", "reasoning_effort",
                    "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens",
                    "cost_usd", "usage_estimated", "created_at"]
    list_filter = ["status", "role", "reasoning_effort", "error_code", "usage_estimated"]
    raw_id_fields = ["conversation"]
    exclude = ["content", "refusal", "reasoning_summary", "tool_calls"]
    readonly_fields = ["prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens",
                       "reasoning_tokens", "cost_usd", "price_snapshot"]
