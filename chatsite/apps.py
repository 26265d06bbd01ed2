from __future__ import annotations

from django.apps import AppConfig


class ChatsiteConfig(AppConfig):
    name = "chatsite"
    verbose_name = "Site settings"

    def ready(self) -> None:
        from chatsite import checks  # noqa: F401  (registers the settings checks)
