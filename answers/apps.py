from django.apps import AppConfig


class AnswersConfig(AppConfig):
    """A turn's answer: start, claim, generation, settlement and the worker's event loop."""

    name = "answers"

    def ready(self) -> None:
        # Connects the receivers that queue follow-up work (titles) after an answer ends.
        from answers import tasks  # noqa: F401
