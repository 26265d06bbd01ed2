"""Request validation for Chat Completions and Responses, returning a normalized request.

Validation order (first failure wins): Azure api-version features, unknown
parameters, parameters the model rejects (in body order), messages / input,
reasoning effort, length caps, streaming options, tools, output format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from emulator import errors
from emulator.accounting import PromptItem
from emulator.models import ModelProfile
from emulator.sealing import opened

CHAT_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
RESPONSES_ROLES = ("user", "assistant", "system", "developer")
SUMMARY_MODES = ("auto", "concise", "detailed")

CHAT_PARAMS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop",
        "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
        "logit_bias", "logprobs", "top_logprobs", "user", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "seed", "service_tier", "store", "metadata",
        "reasoning_effort", "modalities", "audio", "prediction", "functions", "function_call",
        "web_search_options", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
        "verbosity",
    }
)  # fmt: skip
RESPONSES_PARAMS = frozenset(
    {
        "model", "input", "instructions", "reasoning", "max_output_tokens", "stream",
        "stream_options", "tools", "tool_choice", "text", "store", "metadata", "include",
        "previous_response_id", "parallel_tool_calls", "temperature", "top_p", "user",
        "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "service_tier",
        "truncation", "background", "max_tool_calls", "top_logprobs", "prompt", "conversation",
    }
)  # fmt: skip
RESPONSES_REASONING_REJECTS = ("temperature", "top_p", "top_logprobs")

# Azure dated api-versions that introduced o-series request features.
AZURE_FEATURE_VERSIONS = {
    "reasoning_effort": "2024-12-01",
    "developer": "2024-12-01",
    "max_completion_tokens": "2024-09-01",
    "stream_options": "2024-09-01",
}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    parameters: dict[str, Any]


@dataclass
class Conversation:
    """What the reply generator needs to know about the prompt."""

    last_user_text: str = ""
    last_role: str = ""
    # (tool name if known, tool output) when the final message is a tool result.
    tool_result: tuple[str | None, str] | None = None
    prompt_items: list[PromptItem] = field(default_factory=list)


@dataclass
class GenerationRequest:
    profile: ModelProfile
    conversation: Conversation
    effort: str | None
    cap: int | None  # max_completion_tokens / max_output_tokens (/ max_tokens)
    stream: bool
    include_usage: bool
    obfuscate: bool
    tools: list[ToolSpec]
    tools_json: str
    tool_choice: Any
    json_schema: dict[str, Any] | None
    json_object: bool
    stop: list[str]
    summary: str | None = None
    # include=["reasoning.encrypted_content"]: reasoning items carry a sealed blob.
    encrypted_reasoning: bool = False
    prompt_cache_key: str = ""
    service_tier: str | None = None
    verbosity: str | None = None

    @property
    def effort_key(self) -> str:
        return self.effort or "none"


@dataclass(frozen=True)
class AzureVersion:
    raw: str
    date: str  # YYYY-MM-DD, comparable as a string

    def at_least(self, date: str) -> bool:
        return self.date >= date


def _present(body: dict[str, Any], key: str) -> bool:
    return body.get(key) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _check_version_features(
    body: dict[str, Any], version: AzureVersion | None, roles: list[str]
) -> None:
    if version is None:
        return
    for param in ("reasoning_effort", "max_completion_tokens", "stream_options"):
        needed = AZURE_FEATURE_VERSIONS[param]
        if _present(body, param) and not version.at_least(needed):
            raise errors.api_version_too_old(f"'{param}'", param, f"{needed}-preview", version.raw)
    if "developer" in roles and not version.at_least(AZURE_FEATURE_VERSIONS["developer"]):
        index = roles.index("developer")
        raise errors.api_version_too_old(
            "The 'developer' role", f"messages[{index}].role", "2024-12-01-preview", version.raw
        )


def _check_rejected(body: dict[str, Any], rejects: tuple[str, ...]) -> None:
    for key, value in body.items():
        if key in rejects and value is not None:
            raise errors.unsupported_parameter(key)


def _check_cap(param: str, value: Any, profile: ModelProfile, minimum: int) -> int | None:
    if value is None:
        return None
    if not _is_int(value):
        raise errors.invalid_type(param, "an integer", value)
    if value < minimum:
        raise errors.below_minimum(param, value, minimum)
    if value > profile.max_output_tokens:
        raise errors.too_large(param, value, profile.max_output_tokens)
    return value


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise errors.invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise errors.invalid_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        if not isinstance(options, dict):
            raise errors.invalid_type("stream_options", "an object", options)
    options = options or {}
    include_usage = options.get("include_usage") is True
    obfuscate = options.get("include_obfuscation", True) is not False
    return bool(stream), include_usage, obfuscate


def _content_text(content: Any, param: str, profile: ModelProfile) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise errors.invalid_type(param, "a string or an array", content)
    texts: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise errors.invalid_type(f"{param}[{j}]", "an object", part)
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            texts.append(str(part.get("text") or ""))
        elif kind == "refusal":
            texts.append(str(part.get("refusal") or ""))
        elif kind in ("image_url", "input_image"):
            if not profile.vision:
                raise errors.invalid_request(
                    f"Invalid content type. {kind} is only supported by certain models.",
                    param=f"{param}[{j}].type",
                    code="invalid_value",
                )
        elif kind in ("input_audio", "file", "input_file"):
            continue
        else:
            raise errors.invalid_value(
                f"{param}[{j}].type", kind, ("text", "image_url", "input_audio", "refusal", "file")
            )
    return "\n".join(texts)


# --- Chat Completions ----------------------------------------------------------------


def validate_chat(
    body: dict[str, Any], profile: ModelProfile, version: AzureVersion | None
) -> GenerationRequest:
    messages = body.get("messages")
    roles = (
        [str(m.get("role")) for m in messages if isinstance(m, dict)]
        if isinstance(messages, list)
        else []
    )
    _check_version_features(body, version, roles)
    for key in body:
        if key not in CHAT_PARAMS:
            raise errors.unrecognized_argument(key)
    _check_rejected(body, profile.rejects)
    n = body.get("n")
    if n is not None and n != 1:
        # o-series reject n > 1; the emulator does not generate alternatives for any model.
        raise errors.only_default_value("n", n, 1)
    conversation = _chat_conversation(messages, profile)

    effort = body.get("reasoning_effort")
    if profile.reasoning:
        # Some efforts exist on Responses only (gpt-6.1-sol's `max`, todays-models.md
        # section 1). The exact Chat Completions error for one is unreported: this is the
        # same 400 unsupported_value as any effort the model lacks.
        chat_efforts = tuple(e for e in profile.efforts if e not in profile.responses_only_efforts)
        if effort is not None and effort not in chat_efforts:
            raise errors.unsupported_value("reasoning_effort", effort, chat_efforts)
        effort = effort or profile.default_effort
    else:
        effort = None

    cap = _check_cap("max_completion_tokens", body.get("max_completion_tokens"), profile, 1)
    if cap is None and not profile.reasoning:
        cap = _check_cap("max_tokens", body.get("max_tokens"), profile, 1)
    stream, include_usage, obfuscate = _stream_flags(body)
    tools = _chat_tools(body.get("tools"))
    if profile.chat_tools_need_effort_none and effort != "none" and any(
        tool.get("type", "function") == "function" for tool in body.get("tools") or ()
    ):
        # gpt-5.4 and later: function tools only at effort none on this endpoint, the
        # model's default effort included (sources: emulator.models.CHAT_TOOLS_RULE_SOURCES).
        raise errors.function_tools_need_effort_none(profile.id)
    json_schema, json_object = _chat_response_format(body.get("response_format"))
    return GenerationRequest(
        profile=profile,
        conversation=conversation,
        effort=effort,
        cap=cap,
        stream=stream,
        include_usage=include_usage,
        obfuscate=obfuscate,
        tools=tools,
        tools_json=_canonical(body["tools"]) if tools else "",
        tool_choice=body.get("tool_choice"),
        json_schema=json_schema,
        json_object=json_object,
        stop=_stop_list(body.get("stop")),
    )


def _chat_conversation(messages: Any, profile: ModelProfile) -> Conversation:
    if messages is None:
        raise errors.missing_parameter("messages")
    if not isinstance(messages, list):
        raise errors.invalid_type("messages", "an array", messages)
    if not messages:
        raise errors.empty_array("messages")
    conversation = Conversation()
    tool_names: dict[str, str] = {}
    seen_roles: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise errors.invalid_type(f"messages[{i}]", "an object", message)
        role = message.get("role")
        if role is None:
            raise errors.missing_parameter(f"messages[{i}].role")
        if role not in CHAT_ROLES:
            raise errors.invalid_value(f"messages[{i}].role", role, CHAT_ROLES)
        seen_roles.add(role)
        has_calls = bool(message.get("tool_calls") or message.get("function_call"))
        if message.get("content") is None and not (
            role == "assistant" and (has_calls or message.get("refusal"))
        ):
            raise errors.missing_parameter(f"messages[{i}].content")
        text = _content_text(message.get("content"), f"messages[{i}].content", profile)
        billed = [text, str(message.get("name") or "")]
        for call in message.get("tool_calls") or []:
            function = (call.get("function") or {}) if isinstance(call, dict) else {}
            billed.extend((str(function.get("name") or ""), str(function.get("arguments") or "")))
            if isinstance(call, dict) and call.get("id"):
                tool_names[str(call["id"])] = str(function.get("name") or "")
        if role == "tool":
            if not message.get("tool_call_id"):
                raise errors.missing_parameter(f"messages[{i}].tool_call_id")
            if not _follows_tool_calls(messages, i):
                raise errors.invalid_request(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{i}].role",
                )
        if role == "user":
            conversation.last_user_text = text
        conversation.prompt_items.append(PromptItem("".join(billed), _canonical(message)))
    if profile.reasoning and {"system", "developer"} <= seen_roles:
        raise errors.invalid_request(
            "Invalid 'messages': use either 'developer' or 'system' messages, not both. "
            "Reasoning models treat 'system' messages as 'developer' messages.",
            param="messages",
            code="invalid_value",
        )
    last = messages[-1]
    conversation.last_role = last["role"]
    if last["role"] == "tool":
        content = _content_text(last.get("content"), "messages[-1].content", profile)
        conversation.tool_result = (tool_names.get(str(last.get("tool_call_id"))), content)
    return conversation


def _follows_tool_calls(messages: list[Any], index: int) -> bool:
    for previous in reversed(messages[:index]):
        if not isinstance(previous, dict):
            return False
        if previous.get("role") == "tool":
            continue
        return previous.get("role") == "assistant" and bool(previous.get("tool_calls"))
    return False


def _chat_tools(tools: Any) -> list[ToolSpec]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise errors.invalid_type("tools", "an array", tools)
    specs: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise errors.invalid_type(f"tools[{i}]", "an object", tool)
        kind = tool.get("type", "function")
        if kind not in ("function", "custom"):
            raise errors.invalid_value(f"tools[{i}].type", kind, ("function", "custom"))
        function = tool.get(kind) or {}
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise errors.missing_parameter(f"tools[{i}].{kind}.name")
        specs.append(ToolSpec(name, function.get("parameters") or {}))
    return specs


def _chat_response_format(response_format: Any) -> tuple[dict[str, Any] | None, bool]:
    if response_format is None:
        return None, False
    if not isinstance(response_format, dict):
        raise errors.invalid_type("response_format", "an object", response_format)
    kind = response_format.get("type")
    if kind == "text":
        return None, False
    if kind == "json_object":
        return None, True
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise errors.missing_parameter("response_format.json_schema")
        if not spec.get("name"):
            raise errors.missing_parameter("response_format.json_schema.name")
        return spec.get("schema") or {"type": "object", "properties": {}}, False
    raise errors.invalid_value("response_format.type", kind, ("text", "json_object", "json_schema"))


def _stop_list(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise errors.invalid_type("stop", "a string or an array of strings", stop)


# --- Responses -----------------------------------------------------------------------


def validate_responses(body: dict[str, Any], profile: ModelProfile) -> GenerationRequest:
    for key in body:
        if key not in RESPONSES_PARAMS:
            raise errors.unknown_parameter(key)
    if profile.reasoning:
        _check_rejected(body, RESPONSES_REASONING_REJECTS)
    if _present(body, "previous_response_id"):
        # Responses are not stored; clients must resend the conversation (store=false style).
        response_id = body["previous_response_id"]
        raise errors.invalid_request(
            f"Previous response with id '{response_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    background = body.get("background")
    if background is not None and not isinstance(background, bool):
        raise errors.invalid_type("background", "a boolean", background)
    if background and body.get("store") is False:
        raise errors.background_needs_store()
    conversation = _responses_conversation(body, profile)

    reasoning = body.get("reasoning")
    effort: str | None = None
    summary: str | None = None
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise errors.invalid_type("reasoning", "an object", reasoning)
        if not profile.reasoning and (
            reasoning.get("effort") is not None or reasoning.get("summary") is not None
        ):
            raise errors.unsupported_parameter("reasoning.effort")
        effort = reasoning.get("effort")
        if effort is not None and effort not in profile.efforts:
            raise errors.unsupported_value("reasoning.effort", effort, profile.efforts)
        summary = reasoning.get("summary") or reasoning.get("generate_summary")
        if summary is not None and summary not in SUMMARY_MODES:
            raise errors.invalid_value("reasoning.summary", summary, SUMMARY_MODES)
    if profile.reasoning:
        effort = effort or profile.default_effort

    cap = _check_cap("max_output_tokens", body.get("max_output_tokens"), profile, 16)
    stream, include_usage, obfuscate = _stream_flags(body)
    tools = _responses_tools(body.get("tools"))
    json_schema, json_object = _responses_format(body.get("text"))
    return GenerationRequest(
        profile=profile,
        conversation=conversation,
        effort=effort,
        cap=cap,
        stream=stream,
        include_usage=True,
        obfuscate=obfuscate,
        tools=tools,
        tools_json=_canonical(body["tools"]) if tools else "",
        tool_choice=body.get("tool_choice"),
        json_schema=json_schema,
        json_object=json_object,
        stop=[],
        summary=summary,
        encrypted_reasoning=_includes(body.get("include")),
        prompt_cache_key=_cache_key(body.get("prompt_cache_key")),
        service_tier=_service_tier(body.get("service_tier"), profile),
        verbosity=_verbosity(body.get("text")),
    )


SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
VERBOSITIES = ("low", "medium", "high")
PROMPT_CACHE_KEY_MAX = 64


def _cache_key(key: Any) -> str:
    if key is None:
        return ""
    if not isinstance(key, str):
        raise errors.invalid_type("prompt_cache_key", "a string", key)
    if len(key) > PROMPT_CACHE_KEY_MAX:
        raise errors.invalid_request(
            f"Invalid 'prompt_cache_key': string too long. Expected a string with maximum "
            f"length {PROMPT_CACHE_KEY_MAX}, but got a string with length {len(key)} instead.",
            param="prompt_cache_key", code="string_above_max_length",
        )
    return key


def _service_tier(tier: Any, profile: ModelProfile) -> str | None:
    if tier is None:
        return None
    if tier not in SERVICE_TIERS:
        raise errors.invalid_value("service_tier", tier, SERVICE_TIERS)
    if tier == "flex" and not profile.reasoning:
        # Flex processing is offered for the reasoning models only.
        raise errors.invalid_request(
            f"Flex is not available for this model ({profile.snapshot}).",
            param="service_tier", code="invalid_value",
        )
    return str(tier)


def _verbosity(text: Any) -> str | None:
    verbosity = text.get("verbosity") if isinstance(text, dict) else None
    if verbosity is not None and verbosity not in VERBOSITIES:
        raise errors.invalid_value("text.verbosity", verbosity, VERBOSITIES)
    return verbosity


INCLUDABLE = (
    "reasoning.encrypted_content", "message.output_text.logprobs",
    "file_search_call.results", "web_search_call.action.sources",
    "code_interpreter_call.outputs", "computer_call_output.output.image_url",
    "message.input_image.image_url",
)


def _includes(include: Any) -> bool:
    if include is None:
        return False
    if not isinstance(include, list):
        raise errors.invalid_type("include", "an array", include)
    for i, value in enumerate(include):
        if value not in INCLUDABLE:
            raise errors.invalid_value(f"include[{i}]", value, INCLUDABLE)
    return "reasoning.encrypted_content" in include


def _check_reasoning_item(items: list[Any], i: int, profile: ModelProfile) -> None:
    """A returned reasoning item must be intact and followed by the output it led to."""
    item = items[i]
    token = item.get("encrypted_content")
    if token is not None and opened(token, model=profile.snapshot) is None:
        raise errors.invalid_encrypted_content(str(token))
    following = next(
        (later for later in items[i + 1:]
         if not (isinstance(later, dict) and later.get("type") == "reasoning")),
        None,
    )
    follows = isinstance(following, dict) and (
        following.get("type") == "function_call"
        or ((following.get("type") or "message") == "message" and following.get("role") == "assistant")
    )
    if not follows:
        raise errors.reasoning_without_following_item(str(item.get("id") or ""), i)


def _responses_conversation(body: dict[str, Any], profile: ModelProfile) -> Conversation:
    conversation = Conversation()
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise errors.invalid_type("instructions", "a string", instructions)
        conversation.prompt_items.append(
            PromptItem(instructions, _canonical({"role": "developer", "content": instructions}))
        )
    items = body.get("input")
    if items is None:
        raise errors.missing_parameter("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise errors.invalid_type("input", "a string or an array", items)
    call_names: dict[str, str] = {}
    last_kind = ""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise errors.invalid_type(f"input[{i}]", "an object", item)
        kind = item.get("type") or "message"
        billed = ""
        if kind == "message":
            role = item.get("role")
            if role is None:
                raise errors.missing_parameter(f"input[{i}].role")
            if role not in RESPONSES_ROLES:
                raise errors.invalid_value(f"input[{i}].role", role, RESPONSES_ROLES)
            if item.get("content") is None:
                raise errors.missing_parameter(f"input[{i}].content")
            billed = _content_text(item.get("content"), f"input[{i}].content", profile)
            if role == "user":
                conversation.last_user_text = billed
            last_kind = role
        elif kind == "function_call":
            call_names[str(item.get("call_id"))] = str(item.get("name") or "")
            billed = f"{item.get('name') or ''}{item.get('arguments') or ''}"
            last_kind = "assistant"
        elif kind == "function_call_output":
            if not item.get("call_id"):
                raise errors.missing_parameter(f"input[{i}].call_id")
            output = item.get("output")
            billed = output if isinstance(output, str) else _canonical(output)
            conversation.tool_result = (call_names.get(str(item["call_id"])), billed)
            last_kind = "tool"
        elif kind == "reasoning":
            _check_reasoning_item(items, i, profile)
            continue  # carried, not billed as text
        else:
            # item references...: carried, not billed as text.
            continue
        if last_kind != "tool":
            conversation.tool_result = None
        conversation.prompt_items.append(PromptItem(billed, _canonical(item)))
    if not conversation.prompt_items:
        raise errors.empty_array("input")
    conversation.last_role = last_kind
    return conversation


def _responses_tools(tools: Any) -> list[ToolSpec]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise errors.invalid_type("tools", "an array", tools)
    specs: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise errors.invalid_type(f"tools[{i}]", "an object", tool)
        if tool.get("type") != "function":
            continue  # hosted tools (web_search, ...) are accepted and never called
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise errors.missing_parameter(f"tools[{i}].name")
        specs.append(ToolSpec(name, tool.get("parameters") or {}))
    return specs


def _responses_format(text: Any) -> tuple[dict[str, Any] | None, bool]:
    if text is None:
        return None, False
    if not isinstance(text, dict):
        raise errors.invalid_type("text", "an object", text)
    fmt = text.get("format")
    if fmt is None:
        return None, False
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None, False
    if kind == "json_object":
        return None, True
    if kind == "json_schema":
        if not fmt.get("name"):
            raise errors.missing_parameter("text.format.name")
        return fmt.get("schema") or {"type": "object", "properties": {}}, False
    raise errors.invalid_value("text.format.type", kind, ("text", "json_object", "json_schema"))
