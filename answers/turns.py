"""The turn operations the chat websocket runs (``realtime.turns``), carried out here."""

from __future__ import annotations

from answers.branching import regenerate_answer
from answers.replies import request_stop, start_turn


class AnswerTurns:
    """``realtime.turns.TurnOperations``: send (and edit), regenerate and Stop."""

    start = staticmethod(start_turn)
    regenerate = staticmethod(regenerate_answer)
    stop = staticmethod(request_stop)
