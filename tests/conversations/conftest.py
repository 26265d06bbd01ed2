"""Isolation for tests that build provider clients from changing settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def fresh_llm_clients() -> Iterator[None]:
    """SDK clients are cached per endpoint and key; settings change between tests."""
    from conversations.llm import client

    client._clients.clear()
    yield
    client._clients.clear()
