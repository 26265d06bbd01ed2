from __future__ import annotations

from typing import Any

from celery.signals import worker_init
from django.apps import AppConfig

from llm import tokens


class LlmConfig(AppConfig):
    """The provider layer: client, catalog, model profiles, prices, tokens and tools."""

    name = "llm"
    verbose_name = "Models"

    def ready(self) -> None:
        worker_init.connect(load_vocabulary, dispatch_uid="llm.load_vocabulary")


def load_vocabulary(**_kwargs: Any) -> None:
    """A worker loads the token vocabulary as it starts, before it takes a task: loading
    it takes about 1.5 s of CPU, which the first answer's prompt or the first title
    (the side worker's) would otherwise wait for."""
    tokens.get_encoding()
