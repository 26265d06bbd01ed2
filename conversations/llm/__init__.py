from conversations.llm.client import (
    ChatStream,
    build_chat_body,
    build_client,
    cancel_response,
    complete_json,
    delete_response,
    is_demo_mode,
    open_stream,
    resume_stream,
)
from conversations.llm.types import ChatRequest, LLMError, Usage

__all__ = [
    "ChatRequest",
    "ChatStream",
    "LLMError",
    "Usage",
    "build_chat_body",
    "build_client",
    "cancel_response",
    "complete_json",
    "delete_response",
    "is_demo_mode",
    "open_stream",
    "resume_stream",
]
