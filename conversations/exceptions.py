from __future__ import annotations


class TurnRefused(Exception):
    """A turn cannot start; ``code`` is one of the websocket error codes."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class NotFound(TurnRefused):
    """The id does not exist *or* is not the caller's: both answer the same."""

    def __init__(self, what: str = "conversation") -> None:
        super().__init__("forbidden", f"No such {what}, or it is not yours.")
