"""Chat Completions: the stream's chunks, and the usage it reports, read into our events."""

from __future__ import annotations

from typing import Any

from llm.sse import json_int
from llm.types import (
    Finished,
    RefusalDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)


def usage_from_chat(raw: dict[str, Any]) -> Usage:
    # Any *_details object or field may be missing or null (gateways, old Azure versions).
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=json_int(raw.get("prompt_tokens")),
        cached_tokens=json_int(prompt_details.get("cached_tokens")),
        completion_tokens=json_int(raw.get("completion_tokens")),
        reasoning_tokens=json_int(completion_details.get("reasoning_tokens")),
        # openai-python ``PromptTokensDetails.cache_write_tokens`` (optional).
        cache_write_tokens=json_int(prompt_details.get("cache_write_tokens")),
    )


def chat_events(chunk: dict[str, Any], out: list[StreamEvent]) -> None:
    """Our stream events of one Chat Completions chunk, added to ``out`` in order."""
    # Azure's prompt-annotation chunk also has empty choices: only a non-null
    # usage marks the usage chunk.
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        out.append(UsageReport(usage_from_chat(usage)))
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta")  # absent on Azure content-filter annotation chunks
        if isinstance(delta, dict):
            content = delta.get("content")
            if content:
                out.append(TextDelta(str(content)))
            refusal = delta.get("refusal")
            if refusal:
                out.append(RefusalDelta(str(refusal)))
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                out.append(ToolCallDelta(
                    index=json_int(call.get("index")),
                    id=call.get("id"),
                    name=function.get("name"),
                    arguments=function.get("arguments") or "",
                ))
        if choice.get("finish_reason"):
            out.append(Finished(str(choice["finish_reason"])))
