from django.apps import AppConfig


class AnswersConfig(AppConfig):
    """A turn's answer: start, claim, generation, settlement and the worker's event loop.

    Its receivers and the turn operations it gives the websocket are plugged in by
    ``answers/models.py``, which Django imports once models can be."""

    name = "answers"
