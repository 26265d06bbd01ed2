from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """Websocket consumers, frames, publishing, replay and backpressure."""

    name = "realtime"
