from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatsite import metrics


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0  # visible + hidden reasoning: never add reasoning again
    reasoning_tokens: int = 0
    # Prompt tokens written to the provider's prompt cache (billed at the cache-write
    # price, not as input); ``cache_write_12h_tokens`` is the part of them written with
    # 12-hour retention (openai-python ``InputTokensDetails.cache_write_tokens_details``).
    cache_write_tokens: int = 0
    cache_write_12h_tokens: int = field(default=0, compare=False)
    # A turn's total keeps each upstream request's own usage: the long-context rate
    # applies per request, by that request's input size (llm.pricing.usage_cost).
    requests: tuple[Usage, ...] = field(default=(), compare=False, repr=False)
    # A flagged estimate (nothing reported): priced conservatively.
    estimated: bool = field(default=False, compare=False)

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class RefusalDelta:
    text: str


@dataclass(frozen=True)
class ReasoningSummaryDelta:
    text: str


@dataclass(frozen=True)
class ReasoningItem:
    """A finished reasoning item (Responses API), with its encrypted content: kept with
    the answer and sent back before it, since the provider stores nothing (store=false)."""

    item: dict[str, Any]


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class Finished:
    reason: str


@dataclass(frozen=True)
class ResponseStarted:
    """The provider accepted the request and named its response (Responses API): with
    ``background`` on, the id under which the answer can be resumed or cancelled."""

    response_id: str


@dataclass(frozen=True)
class UsageReport:
    usage: Usage
    service_tier: str = ""  # Responses API: the tier that served the request


StreamEvent = (
    TextDelta | RefusalDelta | ReasoningSummaryDelta | ReasoningItem | ToolCallDelta | Finished
    | UsageReport | ResponseStarted
)


@dataclass
class ChatRequest:
    """Provider-neutral description of one upstream call."""

    messages: list[dict[str, Any]]
    reasoning_effort: str
    max_completion_tokens: int
    tools: list[dict[str, Any]] = field(default_factory=list)
    response_format: dict[str, Any] | None = None
    stream: bool = True
    # Responses API: routes a conversation's requests to the cache holding its prefix.
    prompt_cache_key: str = ""
    # Responses API: run the answer as a background response (stored at the provider), so
    # a worker that dies mid-answer can be replaced by one that resumes its stream.
    background: bool = False


@dataclass(frozen=True)
class JsonCompletion:
    """A non-streaming Structured Outputs answer and what the provider said it used."""

    value: dict[str, Any]
    usage: Usage | None


class LLMError(Exception):
    """An upstream failure translated into one of our error codes.

    ``retryable`` says whether trying again could succeed (and is only acted on before
    any text reached the user); ``retry_after`` is the provider's hint in seconds.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.reason = reason
        # What the provider reported using before the failure, when it did (billed).
        self.usage: Usage | None = None
        metrics.provider_error(code, reason)  # each failure is made into one LLMError, once
