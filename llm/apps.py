from django.apps import AppConfig


class LlmConfig(AppConfig):
    """The provider layer: client, catalog, model profiles, prices, tokens and tools."""

    name = "llm"
    verbose_name = "Models"
