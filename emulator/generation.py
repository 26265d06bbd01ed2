"""Decide what a request gets back (text, refusal, tool calls, bench deltas) and its usage.

A Plan is protocol-neutral; streams.py renders it as Chat Completions chunks or
Responses events.

Decision order: refusal fault, length_empty fault, tool calls (scenario,
forced tool_choice, demo rules, tool_choice "required"), scenario `reply`,
bench timestamps (not for a JSON output format), answer to a tool result, JSON
output format, default Markdown reply.

Length: reasoning tokens come first; if they reach the cap
(max_completion_tokens / max_output_tokens, else the model maximum), the
visible reply is empty with finish_reason "length" and completion_tokens ==
cap; otherwise the visible reply is cut to what is left of the cap.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from emulator.config import EmulatorConfig
from emulator.replies import (
    Piece,
    default_reasoning_summary,
    default_reply,
    demo_tool_call,
    json_title,
    pieces_tokens,
    schema_value,
    split_text,
    tool_result_reply,
)
from emulator.scenarios import BACKGROUND_FAULTS, STREAM_FAULTS, Scenario
from emulator.tokens import count_tokens
from emulator.validation import GenerationRequest

_ID_ALPHABET = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


@dataclass
class ToolCallPlan:
    call_id: str
    name: str
    arguments: str
    pieces: tuple[Piece, ...]

    @property
    def tokens(self) -> int:
        return count_tokens(self.name) + pieces_tokens(self.pieces)


@dataclass
class Plan:
    kind: str  # "text" | "refusal" | "tools" | "bench"
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    think_s: float
    tokens_per_second: float
    chunk_tokens: int
    pieces: tuple[Piece, ...] = ()
    tool_calls: list[ToolCallPlan] = field(default_factory=list)
    bench_sizes: tuple[int, ...] = ()  # tokens carried by each bench delta
    fault: str | None = None  # one of STREAM_FAULTS or BACKGROUND_FAULTS
    after_tokens: int = 0
    stall_s: float = 0.0
    annotations: bool = False
    summary: tuple[Piece, ...] | None = None
    cache_write_tokens: int = 0  # prompt tokens this request wrote to the prompt cache

    @property
    def visible_tokens(self) -> int:
        if self.kind == "tools":
            return sum(call.tokens for call in self.tool_calls)
        if self.kind == "bench":
            return sum(self.bench_sizes)
        return pieces_tokens(self.pieces)

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.pieces)

    def head_pieces(self) -> tuple[Piece, ...]:
        """Pieces sent before a stream fault fires (same rule as the stream interpreter)."""
        head: list[Piece] = []
        total = 0
        for piece in self.pieces:
            if total >= self.after_tokens:
                break
            head.append(piece)
            total += piece[1]
        return tuple(head)


def build_plan(
    request: GenerationRequest,
    scenario: Scenario | None,
    config: EmulatorConfig,
    prompt_tokens: int,
    cached_tokens: int,
    cache_write_tokens: int = 0,
) -> Plan:
    s = scenario or Scenario()
    profile = request.profile
    chunk = s.chunk_tokens or config.chunk_tokens
    reasoning = 0
    if profile.reasoning:
        default_reasoning = config.reasoning_tokens.get(request.effort_key, 0)
        reasoning = s.reasoning_tokens if s.reasoning_tokens is not None else default_reasoning
    think_ms = s.think_ms if s.think_ms is not None else config.think_ms.get(request.effort_key, 0)
    structured = request.json_schema is not None or request.json_object
    tokens_per_second = s.tokens_per_second if s.tokens_per_second is not None else config.tokens_per_second
    if structured and config.json_reply_ms > 0:
        # The whole reply takes json_reply_ms; a scenario's own timing still wins.
        think_ms = s.think_ms if s.think_ms is not None else config.json_reply_ms
        tokens_per_second = s.tokens_per_second if s.tokens_per_second is not None else 0.0
    if s.input_tokens is not None:
        prompt_tokens = s.input_tokens
    if s.cached_tokens is not None:
        cached_tokens = s.cached_tokens
    if s.cache_write_tokens is not None:
        cache_write_tokens = s.cache_write_tokens
    # Never more cached or written tokens than the request's input.
    cached_tokens = max(0, min(cached_tokens, prompt_tokens))
    cache_write_tokens = max(0, min(cache_write_tokens, prompt_tokens - cached_tokens))
    plan = Plan(
        kind="text",
        finish_reason="stop",
        prompt_tokens=prompt_tokens,
        cached_tokens=cached_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning,
        think_s=think_ms / 1000,
        tokens_per_second=tokens_per_second,
        chunk_tokens=chunk,
        fault=s.fault if s.fault in STREAM_FAULTS | BACKGROUND_FAULTS else None,
        after_tokens=s.after_tokens,
        stall_s=s.stall_seconds,
        annotations=s.annotations,
    )
    if request.summary and profile.reasoning:
        plan.summary = split_text(
            s.reasoning_summary or default_reasoning_summary(request.conversation.last_user_text),
            chunk,
        )
    cap = request.cap if request.cap is not None else profile.max_output_tokens

    if s.fault == "length_empty":
        plan.reasoning_tokens = request.cap if request.cap is not None else reasoning
        plan.finish_reason = "length"
        return plan
    if reasoning >= cap:
        plan.reasoning_tokens = cap
        plan.finish_reason = "length"
        return plan
    budget = cap - reasoning

    if s.fault == "refusal":
        plan.kind = "refusal"
        _set_text(plan, s.refusal, chunk, budget)
        return plan
    calls = _tool_calls(request, s)
    if calls:
        plan.kind = "tools"
        plan.finish_reason = "tool_calls"
        plan.tool_calls = [_tool_call_plan(name, args, chunk) for name, args in calls]
        return plan
    if s.reply is not None:
        _set_text(plan, _apply_stop(s.reply, request.stop), chunk, budget)
        return plan
    target = s.reply_tokens if s.reply_tokens is not None else config.reply_tokens
    timestamps = s.timestamps if s.timestamps is not None else config.timestamps
    # A JSON reply is read by code, not by a bench tab: it stays JSON in bench mode.
    if timestamps and not structured:
        plan.kind = "bench"
        total = min(target, budget)
        plan.bench_sizes = tuple(min(chunk, total - start) for start in range(0, total, chunk))
        plan.finish_reason = "length" if target > budget else "stop"
        return plan
    conversation = request.conversation
    if conversation.tool_result is not None and conversation.last_role == "tool":
        text = tool_result_reply(*conversation.tool_result)
    elif request.json_schema is not None:
        value = schema_value(request.json_schema, json_title(conversation.last_user_text))
        text = json.dumps(value, ensure_ascii=False)
    elif request.json_object:
        text = json.dumps({"answer": json_title(conversation.last_user_text)}, ensure_ascii=False)
    else:
        # The default reply is cut to exactly `target` tokens (or to the cap, if smaller).
        text = _apply_stop(default_reply(conversation.last_user_text, target), request.stop)
        plan.pieces = split_text(text, chunk, min(target, budget))
        if target > budget:
            plan.finish_reason = "length"
        return plan
    _set_text(plan, _apply_stop(text, request.stop), chunk, budget)
    return plan


def _set_text(plan: Plan, text: str, chunk: int, budget: int) -> None:
    pieces = split_text(text, chunk)
    if pieces_tokens(pieces) > budget:
        pieces = split_text(text, chunk, budget)
        plan.finish_reason = "length"
    plan.pieces = pieces


def _apply_stop(text: str, stop: list[str]) -> str:
    cut = len(text)
    for sequence in stop:
        index = text.find(sequence) if sequence else -1
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def _tool_calls(request: GenerationRequest, s: Scenario) -> list[tuple[str, Any]]:
    scripted = s.all_tool_calls()
    if scripted:
        return [(call["name"], call.get("arguments", {})) for call in scripted]
    choice = request.tool_choice
    if not request.tools or choice == "none" or request.conversation.last_role != "user":
        return []
    title = json_title(request.conversation.last_user_text)
    forced = _forced_tool_name(choice)
    if forced:
        spec = next((t for t in request.tools if t.name == forced), None)
        return [(forced, schema_value(spec.parameters, title) if spec else {})]
    demo = demo_tool_call(request.conversation.last_user_text, [t.name for t in request.tools])
    if demo:
        return [demo]
    if choice == "required":
        first = request.tools[0]
        return [(first.name, schema_value(first.parameters, title))]
    return []


def _forced_tool_name(choice: Any) -> str | None:
    if not isinstance(choice, dict):
        return None
    function = choice.get("function")
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return function["name"]
    name = choice.get("name")
    return name if isinstance(name, str) else None


def _tool_call_plan(name: str, arguments: Any, chunk: int) -> ToolCallPlan:
    if isinstance(arguments, str):
        text = arguments
    else:
        text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    return ToolCallPlan(random_id("call_"), name, text, split_text(text, chunk))
