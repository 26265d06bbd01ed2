from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate, pre_migrate

from conversations.search_index import drop_sqlite_triggers, ensure_sqlite_triggers


def _restore_sqlite_search_triggers(sender: Any, using: str = "default", **kwargs: Any) -> None:
    ensure_sqlite_triggers(connections[using])


def _drop_sqlite_search_triggers(sender: Any, using: str = "default", plan: Any = None,
                                 **kwargs: Any) -> None:
    if plan:  # only when migrations will run: they are put back (and refilled) after
        drop_sqlite_triggers(connections[using])


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        # Embedded SQLite rebuilds a table to alter it, which drops the FTS triggers (and
        # refuses to while a trigger on another table reads it): off during migrations.
        pre_migrate.connect(_drop_sqlite_search_triggers, sender=self)
        post_migrate.connect(_restore_sqlite_search_triggers, sender=self)
