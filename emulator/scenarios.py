"""Scripted scenarios: faults and reply overrides consumed FIFO by matching requests."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Answered with an HTTP error before any generation happens.
HTTP_FAULTS = frozenset(
    {
        "rate_limit",
        "insufficient_quota",
        "server_error",
        "overloaded",
        "model_not_found",
        "unauthorized",
        "forbidden",
        "context_length_exceeded",
        "prompt_filter",
    }
)
# Fire inside a started stream once `after_tokens` content tokens were sent.
STREAM_FAULTS = frozenset({"drop", "error_event", "stall", "truncate", "content_filter"})
# Change what the model says rather than how delivery fails.
REPLY_FAULTS = frozenset({"refusal", "length_empty"})
# Background responses only (a foreground request ignores them). stuck_queued: the
# provider bug where a client disconnecting right at `response.created` leaves the
# background response in `queued` for good (community.openai.com thread 1382584; see
# shared/reference/todays-models.md §3).
BACKGROUND_FAULTS = frozenset({"stuck_queued"})
FAULTS = HTTP_FAULTS | STREAM_FAULTS | REPLY_FAULTS | BACKGROUND_FAULTS

DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."


@dataclass
class Scenario:
    fault: str | None = None
    match: str | None = None
    times: int = 1
    after_tokens: int = 5
    retry_after: float = 1.0
    retry_after_ms: int | None = None
    should_retry: bool | None = None
    stall_seconds: float = 30.0
    refusal: str = DEFAULT_REFUSAL
    reply: str | None = None
    reply_tokens: int | None = None
    think_ms: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    # Prompt tokens reported as written to the prompt cache (the Responses API's
    # input_tokens_details.cache_write_tokens; openai-python InputTokensDetails).
    cache_write_tokens: int | None = None
    # The input size reported instead of the counted one, e.g. above 272,000 tokens for
    # the gpt-6.x long-context rate (todays-models.md section 1), without sending them.
    input_tokens: int | None = None
    tokens_per_second: float | None = None
    chunk_tokens: int | None = None
    tool_call: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    annotations: bool = False
    reasoning_summary: str | None = None
    timestamps: bool | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        if not isinstance(data, Mapping):
            raise ValueError("a scenario must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown scenario field(s): {', '.join(unknown)}")
        scenario = cls(**dict(data))
        try:
            scenario._check()
        except TypeError as exc:
            raise ValueError(f"bad scenario field type: {exc}") from exc
        return scenario

    def _check(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {sorted(FAULTS)}")
        if not isinstance(self.times, int) or self.times < 1:
            raise ValueError("times must be an integer >= 1")
        if self.after_tokens < 0:
            raise ValueError("after_tokens must be >= 0")
        for name in ("cache_write_tokens", "input_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                raise ValueError(f"{name} must be an integer >= 0")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise ValueError("chunk_tokens must be >= 1")
        for call in self.all_tool_calls():
            if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
                raise ValueError("tool_call needs a string 'name' (and optional 'arguments')")

    def all_tool_calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []
        if self.tool_call is not None:
            calls.append(self.tool_call)
        if self.tool_calls:
            calls.extend(self.tool_calls)
        return calls

    def matches(self, user_text: str) -> bool:
        return self.match is None or self.match in user_text

    @property
    def http_fault(self) -> bool:
        return self.fault in HTTP_FAULTS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ScenarioQueue:
    """FIFO of pending scenarios; thread-safe because tests push from another thread."""

    def __init__(self) -> None:
        self._items: list[Scenario] = []
        self._lock = threading.Lock()

    def push(self, scenario: Scenario) -> None:
        with self._lock:
            self._items.append(scenario)

    def peek(self, user_text: str) -> Scenario | None:
        with self._lock:
            for scenario in self._items:
                if scenario.matches(user_text):
                    return scenario
        return None

    def consume(self, scenario: Scenario) -> None:
        with self._lock:
            scenario.times -= 1
            if scenario.times <= 0:
                self._items = [s for s in self._items if s is not scenario]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.to_dict() for s in self._items]

    def __len__(self) -> int:
        return len(self._items)
