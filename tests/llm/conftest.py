from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest


@pytest.fixture
def make_profile(db: None) -> Callable[..., Any]:
    """A saved ModelProfile shaped like the o3-mini seed, with the given fields changed."""
    from llm.models import ModelProfile

    def make(**fields: Any) -> ModelProfile:
        values: dict[str, Any] = {
            "name": "test-model",
            "display_name": "Test reasoner",
            "provider": ModelProfile.Provider.OPENAI,
            "model": "o3-mini",
            "api_style": ModelProfile.ApiStyle.CHAT,
            "instruction_role": ModelProfile.InstructionRole.DEVELOPER,
            "accepted_params": ["reasoning_effort", "max_completion_tokens", "tools"],
            "reasoning_efforts": ["low", "medium", "high"],
            "default_effort": "medium",
            "context_window": 200_000,
            "max_output_tokens": 100_000,
            "max_completion_tokens": 25_000,
            "input_price": Decimal("1.10"),
            "cached_input_price": Decimal("0.55"),
            "output_price": Decimal("4.40"),
        }
        values.update(fields)
        return ModelProfile.objects.create(**values)

    return make
