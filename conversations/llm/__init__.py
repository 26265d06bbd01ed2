from conversations.llm.client import (
    ChatStream,
    build_chat_body,
    build_client,
    complete_json,
    is_demo_mode,
    open_stream,
)
from conversations.llm.types import ChatRequest, LLMError, Usage

__all__ = [
    "ChatRequest",
    "ChatStream",
    "LLMError",
    "Usage",
    "build_chat_body",
    "build_client",
    "complete_json",
    "is_demo_mode",
    "open_stream",
]
