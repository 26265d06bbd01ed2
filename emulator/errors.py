"""Error bodies, worded like OpenAI / Azure OpenAI (spec sections 1.2 and 5.2)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An HTTP error response: raised anywhere in request handling, rendered by the app."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def error_object(
    message: str,
    type_: str | None = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"message": message, "type": type_, "param": param, "code": code}


def openai_error(
    status: int,
    message: str,
    type_: str | None = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> ApiError:
    return ApiError(status, {"error": error_object(message, type_, param, code)}, headers)


def _quoted_list(values: list[str] | tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 1:
        return "".join(quoted)
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


# --- 400 request validation -------------------------------------------------------


def unsupported_parameter(param: str) -> ApiError:
    message = f"Unsupported parameter: '{param}' is not supported with this model."
    if param == "max_tokens":
        message += " Use 'max_completion_tokens' instead."
    return openai_error(400, message, param=param, code="unsupported_parameter")


def unsupported_value(param: str, value: Any, supported: list[str] | tuple[str, ...]) -> ApiError:
    shown = f"'{value}'" if isinstance(value, str) else repr(value)
    message = (
        f"Unsupported value: '{param}' does not support {shown} with this model. "
        f"Supported values are: {_quoted_list(supported)}."
    )
    return openai_error(400, message, param=param, code="unsupported_value")


def only_default_value(param: str, value: Any, default: Any) -> ApiError:
    message = (
        f"Unsupported value: '{param}' does not support {value} with this model. "
        f"Only the default ({default}) value is supported."
    )
    return openai_error(400, message, param=param, code="unsupported_value")


def too_large(param: str, value: int, limit: int) -> ApiError:
    message = (
        f"{param} is too large: {value}. This model supports at most {limit} completion tokens, "
        f"whereas you provided {value}."
    )
    return openai_error(400, message, param=param, code="invalid_value")


def below_minimum(param: str, value: int, minimum: int) -> ApiError:
    message = (
        f"Invalid '{param}': integer below minimum value. "
        f"Expected a value >= {minimum}, but got {value} instead."
    )
    return openai_error(400, message, param=param, code="integer_below_min_value")


def context_length_exceeded(limit: int, total: int) -> ApiError:
    message = (
        f"This model's maximum context length is {limit} tokens. However, your messages "
        f"resulted in {total} tokens. Please reduce the length of the messages."
    )
    return openai_error(400, message, param="messages", code="context_length_exceeded")


def responses_context_length_exceeded() -> ApiError:
    message = "Your input exceeds the context window of this model. Please adjust your input and try again."
    return openai_error(400, message, param="input", code="context_length_exceeded")


def missing_parameter(param: str) -> ApiError:
    return openai_error(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), "an object")


def invalid_type(param: str, expected: str, value: Any) -> ApiError:
    message = (
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead."
    )
    return openai_error(400, message, param=param, code="invalid_type")


def invalid_value(param: str, value: Any, supported: list[str] | tuple[str, ...]) -> ApiError:
    message = f"Invalid value: '{value}'. Supported values are: {_quoted_list(supported)}."
    return openai_error(400, message, param=param, code="invalid_value")


def function_tools_need_effort_none(model: str) -> ApiError:
    """Chat Completions with function tools and an effort other than none, on a model that
    takes tools there only at none (emulator.models.CHAT_TOOLS_RULE_SOURCES). The body is
    OpenAI's as reported (GEMISIS/leviath#333, GoogleChromeLabs/webmcp-tools#417): param
    ``reasoning_effort``, code null. Azure's wording is unknown (no report found): the
    emulator answers its Chat Completions paths with the same body."""
    message = (
        f"Function tools with reasoning_effort are not supported for {model} in "
        "/v1/chat/completions. To use function tools, use /v1/responses or set "
        "reasoning_effort to 'none'."
    )
    return openai_error(400, message, param="reasoning_effort", code=None)


# OpenAI's answer to reasoning.summary from an organization that has not been verified, as
# quoted in continuedev/continue#12031 and OpenHands/software-agent-sdk#987.
UNVERIFIED_SUMMARY_MESSAGE = (
    "Your organization must be verified to generate reasoning summaries. Please go to: "
    "https://platform.openai.com/settings/organization/general and click on Verify "
    "Organization. If you just verified, it can take up to 15 minutes for access to propagate."
)


def summary_needs_verification() -> ApiError:
    return openai_error(
        400, UNVERIFIED_SUMMARY_MESSAGE, param="reasoning.summary", code="unsupported_value"
    )


def invalid_encrypted_content(token: str) -> ApiError:
    # OpenAI's answer when a returned reasoning item's encrypted_content was altered,
    # truncated, or sealed for another organization or model.
    shown = token if len(token) <= 40 else f"{token[:20]}...{token[-10:]}"
    return openai_error(
        400, f"The encrypted content {shown} could not be verified.",
        code="invalid_encrypted_content",
    )


def reasoning_without_following_item(item_id: str, index: int) -> ApiError:
    # A reasoning item sent back must be followed by the output it led to (the assistant
    # message or function call); trimming history between the two orphans it.
    return openai_error(
        400,
        f"Item '{item_id}' of type 'reasoning' was provided without its required following item.",
        param=f"input[{index}]",
    )


def response_not_found(response_id: str) -> ApiError:
    return openai_error(
        404, f"Response with id '{response_id}' not found.", param="response_id",
        code="not_found",
    )


def background_needs_store() -> ApiError:
    # Background responses are polled and resumed later, so the provider must keep them.
    return openai_error(
        400, "Background mode requires 'store' to be true.", param="background",
        code="invalid_value",
    )


def empty_array(param: str) -> ApiError:
    message = (
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, "
        "but got an empty array instead."
    )
    return openai_error(400, message, param=param, code="empty_array")


def unrecognized_argument(param: str) -> ApiError:
    return openai_error(400, f"Unrecognized request argument supplied: {param}")


def unknown_parameter(param: str) -> ApiError:
    return openai_error(
        400, f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter"
    )


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return openai_error(400, message, param=param, code=code)


def invalid_json() -> ApiError:
    return openai_error(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
        "contact us through our help center at help.openai.com.)",
    )


def missing_model() -> ApiError:
    return openai_error(400, "you must provide a model parameter")


def api_version_too_old(feature: str, param: str, needed: str, got: str) -> ApiError:
    message = (
        f"{feature} requires api-version {needed} or later, but the request used "
        f"api-version {got}. Update the api-version query parameter."
    )
    return openai_error(400, message, param=param, code="unsupported_api_version")


# --- auth / availability -----------------------------------------------------------


def invalid_api_key(key: str | None) -> ApiError:
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        masked = key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 8 else "*" * len(key)
        message = (
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
    return openai_error(401, message, code="invalid_api_key")


def model_not_found(model: str) -> ApiError:
    return openai_error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def forbidden() -> ApiError:
    return openai_error(
        403,
        "Country, region, or territory not supported",
        type_="request_forbidden",
        code="unsupported_country_region_territory",
    )


def invalid_url(method: str, path: str) -> ApiError:
    return openai_error(404, f"Invalid URL ({method} {path})")


def method_not_allowed(method: str, path: str) -> ApiError:
    return openai_error(405, f"Method not allowed ({method} {path})")


def azure_resource_not_found() -> ApiError:
    return ApiError(404, {"error": {"code": "404", "message": "Resource not found"}})


def azure_bad_api_version(version: str) -> ApiError:
    return ApiError(
        400,
        {"error": {"code": "BadRequest", "message": f"API version not supported: {version!r}"}},
    )


def azure_deployment_not_found() -> ApiError:
    return ApiError(
        404,
        {
            "error": {
                "code": "DeploymentNotFound",
                "message": (
                    "The API deployment for this resource does not exist. If you created the "
                    "deployment within the last 5 minutes, please wait a moment and try again."
                ),
            }
        },
    )


# --- scripted faults ----------------------------------------------------------------

SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def server_error_object() -> dict[str, Any]:
    return error_object(SERVER_ERROR_MESSAGE, type_="server_error")


def server_error() -> ApiError:
    return ApiError(500, {"error": server_error_object()})


def overloaded() -> ApiError:
    return openai_error(
        503,
        "The engine is currently overloaded, please try again later",
        type_="server_error",
        code="server_is_overloaded",
    )


def rate_limited(
    model: str,
    retry_after: float,
    retry_after_ms: int | None,
    should_retry: bool | None,
) -> ApiError:
    wait = retry_after_ms / 1000 if retry_after_ms is not None else retry_after
    message = (
        f"Rate limit reached for {model} in organization org-emulator on tokens per min (TPM): "
        f"Limit 200000, Used 162960, Requested 42288. Please try again in {wait:g}s. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    headers = {"retry-after": _seconds_header(retry_after)}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(int(retry_after_ms))
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return openai_error(429, message, type_="tokens", code="rate_limit_exceeded", headers=headers)


def _seconds_header(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def insufficient_quota() -> ApiError:
    return openai_error(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        type_="insufficient_quota",
        code="insufficient_quota",
    )


def azure_prompt_filter() -> ApiError:
    return ApiError(
        400,
        {
            "error": {
                "message": (
                    "The response was filtered due to the prompt triggering Azure OpenAI's content "
                    "management policy. Please modify your prompt and retry. To learn more about our "
                    "content filtering policies please read our documentation: "
                    "https://go.microsoft.com/fwlink/?linkid=2198766"
                ),
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {
                        "hate": {"filtered": True, "severity": "high"},
                        "jailbreak": {"filtered": True, "detected": True},
                        "self_harm": {"filtered": False, "severity": "safe"},
                        "sexual": {"filtered": False, "severity": "safe"},
                        "violence": {"filtered": False, "severity": "safe"},
                    },
                },
            }
        },
    )
