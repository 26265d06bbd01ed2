"""Model catalogue: per-model limits, efforts and rejected parameters (data only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Parameters the o-series reject with 400 unsupported_parameter (spec section 1.2).
# `n` is handled separately because n=1 is accepted.
_REASONING_REJECTS = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "max_tokens",
    "parallel_tool_calls",
    "stop",
)

MODEL_CATALOGUE: dict[str, dict[str, Any]] = {
    "o3-mini": {
        "snapshot": "o3-mini-2025-01-31",
        "aliases": ["o3-mini-2025-01-31"],
        "created": 1737146383,
        "owned_by": "system",
        "reasoning": True,
        "efforts": ["low", "medium", "high"],
        "default_effort": "medium",
        "context_window": 200_000,
        "max_output_tokens": 100_000,
        "rejects": list(_REASONING_REJECTS),
        "vision": False,
        # Shut down by OpenAI on this date; the emulator keeps serving it as the
        # offline demo model, but lists the date like /v1/models does.
        "shutdown_date": "2026-10-23",
        "system_fingerprint": "fp_ef58bd3122",
    },
    "gpt-5.6-sol": {
        "snapshot": "gpt-5.6-sol",
        "aliases": [],
        "created": 1776902400,
        "owned_by": "system",
        "reasoning": True,
        "efforts": ["minimal", "low", "medium", "high"],
        "default_effort": "medium",
        "context_window": 400_000,
        "max_output_tokens": 128_000,
        "rejects": list(_REASONING_REJECTS),
        "vision": True,
        "shutdown_date": None,
        "system_fingerprint": "fp_5c1d0e7a93",
        # Chat Completions refuses function tools at any effort but none (see
        # CHAT_TOOLS_RULE_SOURCES).
        "chat_tools_need_effort_none": True,
    },
    # Today's models (shared/reference/todays-models.md section 1). Efforts are the ones a
    # source confirms: the gpt-6.2 pages say both reject `none`, and none names `max` for
    # them (the SDK's ReasoningEffort type lists `max` but says not every model takes every
    # value). Windows: 1,050,000 context, 922,000 max input, 128,000 max output.
    "gpt-6.2-sol": {
        # developers.openai.com/api/docs/models/gpt-6.2-sol; released 2026-11-17.
        "snapshot": "gpt-6.2-sol",
        "aliases": [],
        "created": 1794873600,
        "owned_by": "system",
        "reasoning": True,
        "efforts": ["low", "medium", "high", "xhigh"],
        "default_effort": "medium",
        "context_window": 922_000,
        "max_output_tokens": 128_000,
        "rejects": list(_REASONING_REJECTS),
        "vision": True,
        "shutdown_date": None,
        "system_fingerprint": "fp_62a50c1e7d",
        # Chat Completions refuses function tools at any effort but none (see
        # CHAT_TOOLS_RULE_SOURCES).
        "chat_tools_need_effort_none": True,
    },
    "gpt-6.2-astra": {
        # OpenAI models index; LiteLLM discussion #52347 (premium tier, same window).
        "snapshot": "gpt-6.2-astra",
        "aliases": [],
        "created": 1794873600,
        "owned_by": "system",
        "reasoning": True,
        "efforts": ["low", "medium", "high", "xhigh"],
        "default_effort": "medium",
        "context_window": 922_000,
        "max_output_tokens": 128_000,
        "rejects": list(_REASONING_REJECTS),
        "vision": True,
        "shutdown_date": None,
        "system_fingerprint": "fp_62b7f3a094",
        # Chat Completions refuses function tools at any effort but none (see
        # CHAT_TOOLS_RULE_SOURCES).
        "chat_tools_need_effort_none": True,
    },
    "gpt-6-sol": {
        # codexometer v0.18.4, PromptFuel v1.0.21: none...xhigh; released 2026-09-22.
        "snapshot": "gpt-6-sol",
        "aliases": [],
        "created": 1790035200,
        "owned_by": "system",
        "reasoning": True,
        "efforts": ["none", "low", "medium", "high", "xhigh"],
        "default_effort": "medium",
        "context_window": 922_000,
        "max_output_tokens": 128_000,
        "rejects": list(_REASONING_REJECTS),
        "vision": True,
        "shutdown_date": None,
        "system_fingerprint": "fp_60c4d9e215",
        # Chat Completions refuses function tools at any effort but none (see
        # CHAT_TOOLS_RULE_SOURCES).
        "chat_tools_need_effort_none": True,
    },
    "gpt-6.1-sol": {
        # Model page via codex-token-watch v0.3.3 and Codex-Manager 0.4.7 (todays-models.md
        # section 1): low...xhigh on Chat Completions, `max` only on Responses. Released
        # 2026-09-29.
        "snapshot": "gpt-6.1-sol",
        "aliases": [],
        "created": 1790640000,
        "owned_by": "system",
        "reasoning": True,
        "efforts": ["low", "medium", "high", "xhigh", "max"],
        "responses_only_efforts": ["max"],
        "default_effort": "medium",
        "context_window": 922_000,
        "max_output_tokens": 128_000,
        "rejects": list(_REASONING_REJECTS),
        "vision": True,
        "shutdown_date": None,
        "system_fingerprint": "fp_61d2a7c3b8",
        "chat_tools_need_effort_none": True,
    },
    "gpt-5.4": {
        # LiteLLM 1.110.2 price table (supports_none/xhigh_reasoning_effort, max_input_tokens
        # 1,050,000, max_output_tokens 128,000), which also names the dated snapshot.
        "snapshot": "gpt-5.4-2026-03-05",
        "aliases": ["gpt-5.4-2026-03-05"],
        "created": 1772668800,
        "owned_by": "system",
        "reasoning": True,
        "efforts": ["none", "low", "medium", "high", "xhigh"],
        "default_effort": "medium",
        "context_window": 1_050_000,
        "max_output_tokens": 128_000,
        "rejects": list(_REASONING_REJECTS),
        "vision": True,
        "shutdown_date": None,
        "system_fingerprint": "fp_54e1b8a6c3",
        # Chat Completions refuses function tools at any effort but none (see
        # CHAT_TOOLS_RULE_SOURCES).
        "chat_tools_need_effort_none": True,
    },
    "gpt-4.1-mini": {
        "snapshot": "gpt-4.1-mini-2025-04-14",
        "aliases": ["gpt-4.1-mini-2025-04-14"],
        "created": 1744318173,
        "owned_by": "system",
        "reasoning": False,
        "efforts": [],
        "default_effort": None,
        "context_window": 1_047_576,
        "max_output_tokens": 32_768,
        "rejects": ["reasoning_effort"],
        "vision": True,
        "shutdown_date": None,
        "system_fingerprint": "fp_38647f5e19",
    },
}

DEFAULT_MODEL = "o3-mini"

# Models marked "chat_tools_need_effort_none" (gpt-5.4 and later) answer a Chat Completions
# request that carries function tools with a reasoning effort other than "none" (sent or
# the model's default) with a 400; the Responses API takes both. Sources, as quoted in
# shared/reference/todays-models.md section 2 and in the issue threads:
CHAT_TOOLS_RULE_SOURCES = (
    "community.openai.com thread 1386454",
    "LibreChat issue #14231",
    "developers.openai.com gpt-6-luna model page: Chat Completions supports function calling "
    "only with reasoning_effort set to none",
    "GEMISIS/leviath#333, GoogleChromeLabs/webmcp-tools#417: the error body (param "
    "reasoning_effort, code null)",
    "laurent22/joplin#16451: refused too when no reasoning_effort is sent (the default applies)",
)


@dataclass(frozen=True)
class ModelProfile:
    id: str
    snapshot: str
    aliases: tuple[str, ...]
    created: int
    owned_by: str
    reasoning: bool
    efforts: tuple[str, ...]
    default_effort: str | None
    context_window: int
    max_output_tokens: int
    rejects: tuple[str, ...]
    vision: bool
    shutdown_date: str | None
    system_fingerprint: str
    chat_tools_need_effort_none: bool = False
    # Efforts the model takes on the Responses API only (refused on Chat Completions).
    responses_only_efforts: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


def _build_profiles() -> dict[str, ModelProfile]:
    index: dict[str, ModelProfile] = {}
    for model_id, data in MODEL_CATALOGUE.items():
        profile = ModelProfile(
            id=model_id,
            snapshot=data["snapshot"],
            aliases=tuple(data["aliases"]),
            created=data["created"],
            owned_by=data["owned_by"],
            reasoning=data["reasoning"],
            efforts=tuple(data["efforts"]),
            default_effort=data["default_effort"],
            context_window=data["context_window"],
            max_output_tokens=data["max_output_tokens"],
            rejects=tuple(data["rejects"]),
            vision=data["vision"],
            shutdown_date=data["shutdown_date"],
            system_fingerprint=data["system_fingerprint"],
            chat_tools_need_effort_none=data.get("chat_tools_need_effort_none", False),
            responses_only_efforts=tuple(data.get("responses_only_efforts", ())),
        )
        for name in profile.names:
            index[name] = profile
    return index


_PROFILES = _build_profiles()


def lookup_model(name: str, retired: list[str] | tuple[str, ...] = ()) -> ModelProfile | None:
    """Resolve a model id or alias; retired names (and their aliases) resolve to None."""
    profile = _PROFILES.get(name)
    if profile is None:
        return None
    if name in retired or profile.id in retired:
        return None
    return profile


def model_listing(retired: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The /v1/models `data` array: every served id and alias."""
    entries: list[dict[str, Any]] = []
    for name, profile in _PROFILES.items():
        if lookup_model(name, retired) is None:
            continue
        entries.append(model_object(name, profile))
    return entries


def model_object(name: str, profile: ModelProfile) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": profile.created,
        "owned_by": profile.owned_by,
    }
    if profile.shutdown_date:
        entry["shutdown_date"] = profile.shutdown_date
    return entry
