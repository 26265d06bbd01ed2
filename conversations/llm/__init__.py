from conversations.llm.client import (
    AsyncChatStream,
    ChatStream,
    build_chat_body,
    build_client,
    cancel_response,
    complete_json,
    delete_response,
    is_demo_mode,
    open_stream,
    open_stream_async,
    resume_stream,
    resume_stream_async,
)
from conversations.llm.types import ChatRequest, LLMError, Usage

__all__ = [
    "AsyncChatStream",
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
    "open_stream_async",
    "resume_stream",
    "resume_stream_async",
]
