"""Emulator configuration: defaults that scenarios can override per request."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_THINK_MS: dict[str, int] = {
    "none": 0,
    "minimal": 100,
    "low": 300,
    "medium": 800,
    "high": 2000,
    # Real models reason for minutes at these efforts; the demo keeps the order of
    # magnitude apart from high without making a person wait minutes.
    "xhigh": 3000,
    "max": 4000,
}
DEFAULT_REASONING_TOKENS: dict[str, int] = {
    "none": 0,
    "minimal": 16,
    "low": 64,
    "medium": 256,
    "high": 1024,
    "xhigh": 2048,
    "max": 4096,
}


@dataclass
class EmulatorConfig:
    tokens_per_second: float = 100.0
    chunk_tokens: int = 1
    # Silent pause before the first content delta, per reasoning effort
    # ("none" is used for non-reasoning models).
    think_ms: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_THINK_MS))
    reasoning_tokens: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_REASONING_TOKENS))
    reply_tokens: int = 60
    # Azure shapes (prompt-filter chunk, content_filter_results) on the /v1 paths too.
    azure: bool = False
    # Azure deployment name -> catalogue model id.
    deployments: dict[str, str] = field(default_factory=dict)
    # When true, deployments missing from `deployments` give 404 DeploymentNotFound.
    strict_deployments: bool = False
    # Catalogue models that answer 404 model_not_found.
    retired_models: list[str] = field(default_factory=list)
    # False: the key's organization is not verified, and Responses requests that ask for a
    # reasoning summary get OpenAI's 400 (param reasoning.summary).
    verified_org: bool = True
    # Bench mode: every content delta is " <n>@<unix time at send>".
    timestamps: bool = False
    # Replies in a JSON response format (Chat `response_format`, Responses `text.format`:
    # json_schema or json_object), the shape side calls such as conversation titles ask
    # for: when > 0, each takes this long in all (its pause, then unpaced output), whatever
    # the effort, so a bench can give them a real call's latency apart from the answers'.
    # 0: the effort's think_ms and tokens_per_second, as any reply.
    json_reply_ms: int = 0
    journal_limit: int = 10_000
    cache_min_tokens: int = 1024
    cache_granularity: int = 128
    cache_entries: int = 1024
    ratelimit_requests: int = 30_000
    ratelimit_tokens: int = 150_000_000
    # Prompt accounting: tokens added per message and once per request.
    message_overhead_tokens: int = 3
    priming_tokens: int = 3

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update (control API / CLI); raises ValueError on bad input."""
        known = {f.name: f for f in dataclasses.fields(self)}
        staged: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown config field: {key!r}")
            staged[key] = _coerce(key, value, getattr(self, key))
        for key, value in staged.items():
            if key in ("think_ms", "reasoning_tokens"):
                merged = dict(getattr(self, key))
                merged.update(value)
                value = merged
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_effort_map(text: str) -> dict[str, int]:
    """Parse ``"low=300,medium=800,high=2000"``."""
    result: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, number = part.partition("=")
        if not sep:
            raise ValueError(f"expected effort=value, got {part!r}")
        result[name.strip()] = int(number)
    return result


def _coerce(key: str, value: Any, current: Any) -> Any:
    if key in ("think_ms", "reasoning_tokens"):
        if isinstance(value, str):
            return parse_effort_map(value)
        if isinstance(value, Mapping):
            return {str(k): int(v) for k, v in value.items()}
        raise ValueError(f"{key} must be a mapping or 'effort=value,...' string")
    if key == "deployments":
        if not isinstance(value, Mapping):
            raise ValueError("deployments must be a mapping")
        return {str(k): str(v) for k, v in value.items()}
    if key == "retired_models":
        if isinstance(value, str):
            return [value]
        return [str(v) for v in value]
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a boolean")
        return value
    if isinstance(current, int):
        number = int(value)
        if number < 0:
            raise ValueError(f"{key} must be >= 0")
        if key == "chunk_tokens" and number < 1:
            raise ValueError("chunk_tokens must be >= 1")
        return number
    if isinstance(current, float):
        real = float(value)
        if real < 0:
            raise ValueError(f"{key} must be >= 0")
        return real
    return value
