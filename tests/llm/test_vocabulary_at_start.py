"""A Celery worker loads the token vocabulary when it starts, not in its first task."""

from __future__ import annotations

import pytest
from celery.signals import worker_init

from llm import tokens
from llm.apps import load_vocabulary


def test_a_starting_worker_loads_the_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    connected = [receiver() for _key, receiver in worker_init.receivers]
    assert load_vocabulary in connected
    monkeypatch.setattr(tokens, "_encoding", None)

    load_vocabulary(sender=None)

    assert tokens._encoding is not None
    assert tokens.count_tokens("hello world") == 2
