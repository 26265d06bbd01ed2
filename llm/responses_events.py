"""The Responses API: the stream's event objects, and the usage it reports, read into our
events, noting how far the stream got (a background response is resumed from there)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm.sse import json_int, json_object
from llm.types import (
    Finished,
    LLMError,
    ReasoningItem,
    ReasoningSummaryDelta,
    RefusalDelta,
    ResponseStarted,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)


@dataclass
class ResponseProgress:
    """How far a Responses stream got: the response's id (from ``response.created``, or
    the one being resumed), the last ``sequence_number`` read, and whether its terminal
    event arrived."""

    response_id: str = ""
    sequence_number: int | None = None
    ended: bool = False
    status: str = ""  # the response's last status the stream reported (queued, in_progress, …)


def usage_from_responses(raw: dict[str, Any]) -> Usage:
    input_details = raw.get("input_tokens_details") or {}
    output_details = raw.get("output_tokens_details") or {}
    write_details = input_details.get("cache_write_tokens_details") or {}
    return Usage(
        prompt_tokens=json_int(raw.get("input_tokens")),
        cached_tokens=json_int(input_details.get("cached_tokens")),
        completion_tokens=json_int(raw.get("output_tokens")),
        reasoning_tokens=json_int(output_details.get("reasoning_tokens")),
        # openai-python ``InputTokensDetails``: cache writes are their own price line.
        cache_write_tokens=json_int(input_details.get("cache_write_tokens")),
        cache_write_12h_tokens=json_int(write_details.get("ttl_12h_tokens")),
    )


class ResponsesEvents:
    """Our stream events of Responses API event objects, one object at a time, noting the
    stream's progress.

    A resumed stream starts after events it never sees again (a tool call announced,
    a reasoning item finished): the terminal event's ``output`` supplies the items this
    stream did not see, once.
    """

    __slots__ = ("call_index", "progress", "reasoning_seen")

    def __init__(self, progress: ResponseProgress) -> None:
        self.progress = progress
        self.call_index: dict[str, int] = {}
        self.reasoning_seen: set[str] = set()

    def read(self, event: dict[str, Any], out: list[StreamEvent]) -> None:
        """Add the events of ``event`` to ``out`` in order (or raise the error it reports)."""
        progress, call_index = self.progress, self.call_index
        sequence = event.get("sequence_number")
        if isinstance(sequence, int):
            progress.sequence_number = sequence
        kind = event.get("type")
        if kind == "response.output_text.delta":
            if event.get("delta"):
                out.append(TextDelta(str(event["delta"])))
        elif kind == "response.refusal.delta":
            if event.get("delta"):
                out.append(RefusalDelta(str(event["delta"])))
        elif kind == "response.reasoning_summary_text.delta":
            if event.get("delta"):
                out.append(ReasoningSummaryDelta(str(event["delta"])))
        elif kind == "response.function_call_arguments.delta":
            index = call_index.get(str(event.get("item_id")))
            if index is not None:  # else announced before a resume: taken from the output
                out.append(ToolCallDelta(index, None, None, str(event.get("delta") or "")))
        elif kind == "response.output_item.added":
            item = json_object(event.get("item"))
            if item.get("type") == "function_call":
                index = call_index.setdefault(_item_key(item), len(call_index))
                out.append(ToolCallDelta(index, item.get("call_id"), item.get("name"), ""))
        elif kind == "response.output_item.done":
            item = json_object(event.get("item"))
            if item.get("type") == "reasoning":
                self.reasoning_seen.add(str(item.get("id")))
                out.append(ReasoningItem(_without_nulls(item)))
        elif kind in ("response.queued", "response.in_progress"):
            progress.status = str(json_object(event.get("response")).get("status") or "")
        elif kind == "response.created":
            progress.status = str(json_object(event.get("response")).get("status") or "")
            response_id = str(json_object(event.get("response")).get("id") or "")
            if response_id:
                progress.response_id = response_id
                out.append(ResponseStarted(response_id))
        elif kind in ("response.completed", "response.incomplete"):
            progress.ended = True
            self._ended(kind, json_object(event.get("response")), out)
        elif kind in ("error", "response.failed"):
            progress.ended = True
            raise LLMError(
                "upstream_error",
                "The model provider reported an error while answering.",
                retryable=True,
                reason="stream_error",
            )

    def _ended(self, kind: str, response: dict[str, Any], out: list[StreamEvent]) -> None:
        """The terminal event: the items this stream did not see, the usage, the finish."""
        call_index = self.call_index
        output = [item for item in response.get("output") or () if isinstance(item, dict)]
        for item in output:
            if item.get("type") == "reasoning" and str(item.get("id")) not in self.reasoning_seen:
                out.append(ReasoningItem(_without_nulls(item)))
            elif item.get("type") == "function_call" and _item_key(item) not in call_index:
                index = call_index.setdefault(_item_key(item), len(call_index))
                out.append(ToolCallDelta(index, item.get("call_id"), item.get("name"),
                                         str(item.get("arguments") or "")))
        usage = response.get("usage")
        if isinstance(usage, dict):
            out.append(UsageReport(
                usage_from_responses(usage), service_tier=str(response.get("service_tier") or "")
            ))
        if kind == "response.completed":
            has_calls = any(item.get("type") == "function_call" for item in output)
            out.append(Finished("tool_calls" if has_calls else "stop"))
        else:
            reason = json_object(response.get("incomplete_details")).get("reason") or ""
            out.append(Finished("content_filter" if reason == "content_filter" else "length"))


def _item_key(item: dict[str, Any]) -> str:
    return str(item.get("id") or item.get("call_id"))


def _without_nulls(item: dict[str, Any]) -> dict[str, Any]:
    # The item is kept with the answer and sent back as input later; like the SDK's
    # exclude_none dump it replaced, it carries no null fields.
    return {key: value for key, value in item.items() if value is not None}
