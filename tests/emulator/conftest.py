"""Fixtures for the emulator tests: one real uvicorn server per session, reset per test.

No Django involved; these tests only need the emulator package and the openai SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from emulator.config import EmulatorConfig
from emulator.server import EmulatorHandle, serve_in_thread
from tests.emulator.helpers import AZURE_VERSION


def fast_config(**overrides: Any) -> EmulatorConfig:
    """No thinking pause, unpaced tokens and short replies: tests stay fast."""
    config = EmulatorConfig(
        tokens_per_second=0.0,
        think_ms={"none": 0, "minimal": 0, "low": 0, "medium": 0, "high": 0},
        reply_tokens=30,
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def server() -> Iterator[EmulatorHandle]:
    handle = serve_in_thread(fast_config())
    yield handle
    handle.stop()


@pytest.fixture
def emu(server: EmulatorHandle) -> Iterator[EmulatorHandle]:
    server.emulator.reset()
    server.emulator.config = fast_config()
    yield server
    server.emulator.reset()
    server.emulator.config = fast_config()


@pytest.fixture
def client(emu: EmulatorHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0)


@pytest.fixture
def azure(emu: EmulatorHandle) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=emu.url, api_version=AZURE_VERSION, api_key="x", max_retries=0
    )
