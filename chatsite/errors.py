"""The two errors every layer raises, and one place that says what they mean.

``Refused(code, detail)``: an action cannot go ahead; ``code`` is one of the websocket
error codes (DESIGN.md) and ``detail`` the sentence the person reads. ``NotFound``: the id
does not exist *or* is not the caller's; both answer the same. Views let ``NotFound``
escape and ``chatsite.middleware.NotFoundAs404Middleware`` is the only path from it to a
404; the websocket consumer answers it as a ``forbidden`` error frame.
"""

from __future__ import annotations


class Refused(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class NotFound(Refused):
    def __init__(self, what: str = "conversation") -> None:
        super().__init__("forbidden", f"No such {what}, or it is not yours.")
