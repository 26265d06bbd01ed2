"""OpenAI-compatible o-series emulator (Chat Completions + Responses, OpenAI and Azure shapes).

The offline demo model of the product and the test double for its openai SDK client.
Public API (imported lazily so ``from emulator.tokens import count_tokens`` stays light):

    create_app(config=None) -> Starlette          emulator.app
    serve_in_thread(config=None, host, port)      emulator.server -> EmulatorHandle
    EmulatorConfig, Emulator, Scenario
    count_tokens(text), get_encoding()            emulator.tokens
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "create_app": "emulator.app",
    "EmulatorConfig": "emulator.config",
    "Emulator": "emulator.state",
    "Scenario": "emulator.scenarios",
    "serve_in_thread": "emulator.server",
    "EmulatorHandle": "emulator.server",
    "count_tokens": "emulator.tokens",
    "get_encoding": "emulator.tokens",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'emulator' has no attribute {name!r}")
    return getattr(import_module(module), name)
