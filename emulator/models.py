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
