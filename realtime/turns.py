"""What the chat websocket asks of the layer that runs turns: the port it calls through.

The consumer parses a command and calls one of these operations; the answers app carries
them out (``answers.turns``) and registers itself here when Django loads it, so the
websocket never imports the layer above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from accounts.models import User
    from conversations.models import Conversation, Message
    from conversations.tree import ParentChoice


@dataclass(frozen=True)
class Turn:
    """A started turn: the question and its pending answer (``message.created``)."""

    conversation: Conversation
    user_message: Message
    assistant_message: Message
    # Answers that were waiting for a worker when this one was queued (its place).
    queued_ahead: int = 0


class TurnOperations(Protocol):
    """Each raises ``chatsite.errors.Refused`` (the socket sends its code and detail) or
    ``NotFound`` for an id the person may not see."""

    def start(self, *, user: User, organization_id: int | None, conversation_id: int | None,
              content: str, reasoning_effort: str | None, client_id: str,
              profile_name: str | None, parent_id: ParentChoice) -> Turn:
        """Save the question and a pending answer, queued for a worker after commit."""
        ...

    def regenerate(self, *, user: User, message_id: int, reasoning_effort: str | None,
                   client_id: str, profile_name: str | None) -> Turn:
        """A new answer to the question the answer ``message_id`` answered."""
        ...

    def stop(self, *, user: User, message_id: int) -> object:
        """Stop the answer ``message_id``, keeping what it wrote so far."""
        ...


_operations: TurnOperations | None = None


def register(operations: TurnOperations) -> None:
    """Called once per process by the app that runs turns, when Django loads it."""
    global _operations
    _operations = operations


def operations() -> TurnOperations:
    if _operations is None:
        raise RuntimeError("No app registered the turn operations (is answers installed?)")
    return _operations
