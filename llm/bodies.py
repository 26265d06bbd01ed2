"""The exact request bodies sent to the provider, built from the model profile alone (no
model-name branches): one for Chat Completions, one for the Responses API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm.types import ChatRequest

if TYPE_CHECKING:
    from llm.models import ModelProfile


def build_chat_body(profile: ModelProfile, request: ChatRequest) -> dict[str, Any]:
    """The exact Chat Completions body, from the profile alone (no model-name branches)."""
    body: dict[str, Any] = {"model": profile.model, "messages": request.messages}
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.reasoning_effort and profile.accepts("reasoning_effort"):
        body["reasoning_effort"] = request.reasoning_effort
    if profile.accepts("max_completion_tokens"):
        body["max_completion_tokens"] = request.max_completion_tokens
    elif profile.accepts("max_tokens"):
        body["max_tokens"] = request.max_completion_tokens
    if request.tools and profile.accepts("tools"):
        body["tools"] = request.tools
    if request.response_format is not None and profile.accepts("response_format"):
        body["response_format"] = request.response_format
    return body


def _responses_input(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Split chat messages into Responses ``instructions`` and ``input`` items."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role in ("developer", "system"):
            instructions.append(message["content"])
        elif role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message["tool_call_id"],
                    "output": message["content"],
                }
            )
        elif role == "assistant" and message.get("tool_calls"):
            # Each reasoning item goes right before the output it led to.
            items.extend(message.get("reasoning_items") or ())
            for call in message["tool_calls"]:
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call["id"],
                        "name": call["function"]["name"],
                        "arguments": call["function"]["arguments"],
                    }
                )
        else:
            if role == "assistant":
                items.extend(message.get("reasoning_items") or ())
            items.append({"role": role, "content": message["content"] or ""})
    return "\n\n".join(instructions), items


def build_responses_body(profile: ModelProfile, request: ChatRequest) -> dict[str, Any]:
    """The exact Responses body. Nothing is stored at the provider, except for a
    background answer: the provider requires ``store`` for it, and keeping it is what
    lets another worker resume its stream."""
    instructions, items = _responses_input(request.messages)
    body: dict[str, Any] = {"model": profile.model, "input": items, "store": request.background}
    if request.background:
        body["background"] = True
    if instructions:
        body["instructions"] = instructions
    if request.stream:
        body["stream"] = True
    if profile.accepts("reasoning_effort"):
        body["reasoning"] = {"effort": request.reasoning_effort}
        if profile.reasoning_summaries:
            body["reasoning"]["summary"] = "auto"
        # Later turns and tool rounds send the reasoning back themselves (encrypted), so
        # they never depend on what the provider stored (a background response may be
        # deleted once its answer ended).
        body["include"] = ["reasoning.encrypted_content"]
    body["max_output_tokens"] = request.max_completion_tokens
    if request.tools and profile.accepts("tools"):
        body["tools"] = [
            {"type": "function", **tool["function"]} for tool in request.tools
        ]
    if request.response_format is not None and profile.accepts("response_format"):
        schema = request.response_format.get("json_schema", {})
        body["text"] = {"format": {"type": "json_schema", **schema}}
    if profile.verbosity:
        body["text"] = {**body.get("text", {}), "verbosity": profile.verbosity}
    if request.prompt_cache_key:
        body["prompt_cache_key"] = request.prompt_cache_key
    if profile.service_tier:
        body["service_tier"] = profile.service_tier
    return body
