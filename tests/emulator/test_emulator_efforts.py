"""Which reasoning efforts today's models take, per API (shared/reference/todays-models.md
section 1): a model refuses an effort it lacks with OpenAI's 400 unsupported_value."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.shared import ReasoningEffort

from tests.emulator.helpers import user


def error_of(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return info.value


def unsupported_effort(param: str, effort: str, supported: str) -> dict[str, Any]:
    return {
        "message": (
            f"Unsupported value: '{param}' does not support '{effort}' with this model. "
            f"Supported values are: {supported}."
        ),
        "type": "invalid_request_error",
        "param": param,
        "code": "unsupported_value",
    }


@pytest.mark.parametrize("model", ["gpt-6.2-sol", "gpt-6.2-astra"])
def test_the_gpt_6_2_models_refuse_effort_none_on_both_apis(client: openai.OpenAI, model: str) -> None:
    """Both reject `none`: developers.openai.com/api/docs/models/gpt-6.2-sol, and for astra
    the OpenAI models index and LiteLLM discussion #52347 (todays-models.md section 1)."""
    supported = "'low', 'medium', 'high', and 'xhigh'"

    chat = error_of(lambda: client.chat.completions.create(
        model=model, messages=user("hi"), reasoning_effort="none"))
    responses = error_of(lambda: client.responses.create(
        model=model, input="hi", reasoning={"effort": "none"}))

    assert chat.status_code == responses.status_code == 400
    assert chat.body == unsupported_effort("reasoning_effort", "none", supported)
    assert responses.body == unsupported_effort("reasoning.effort", "none", supported)


@pytest.mark.parametrize("effort", ["low", "xhigh"])
def test_gpt_6_2_sol_answers_at_the_efforts_it_has(
    client: openai.OpenAI, effort: ReasoningEffort
) -> None:
    """developers.openai.com/api/docs/models/gpt-6.2-sol: every effort but `none` up to xhigh."""
    response = client.responses.create(model="gpt-6.2-sol", input="hi", reasoning={"effort": effort})

    assert response.status == "completed" and response.output_text
    assert response.reasoning is not None and response.reasoning.effort == effort


def test_gpt_6_1_sol_takes_max_on_responses_only(client: openai.OpenAI) -> None:
    """gpt-6.1-sol: low...xhigh on Chat Completions, `max` only on Responses (model page via
    codex-token-watch v0.3.3 and Codex-Manager 0.4.7, todays-models.md section 1). The exact
    Chat Completions error is unreported; it is the usual unsupported_value."""
    response = client.responses.create(model="gpt-6.1-sol", input="hi", reasoning={"effort": "max"})
    chat = error_of(lambda: client.chat.completions.create(
        model="gpt-6.1-sol", messages=user("hi"), reasoning_effort="max"))
    xhigh_on_chat = client.chat.completions.create(
        model="gpt-6.1-sol", messages=user("hi"), reasoning_effort="xhigh")

    assert response.status == "completed" and response.reasoning.effort == "max"  # type: ignore[union-attr]
    assert chat.status_code == 400
    assert chat.body == unsupported_effort(
        "reasoning_effort", "max", "'low', 'medium', 'high', and 'xhigh'")
    assert xhigh_on_chat.choices[0].message.content


def test_gpt_6_sol_and_gpt_5_4_take_none_through_xhigh(client: openai.OpenAI) -> None:
    """gpt-6-sol: none...xhigh (codexometer v0.18.4, PromptFuel v1.0.21); gpt-5.4: LiteLLM
    1.110.2's supports_none/xhigh_reasoning_effort. Neither takes `max` (no source names it)."""
    for model in ("gpt-6-sol", "gpt-5.4"):
        for effort in ("none", "xhigh"):
            response = client.responses.create(model=model, input="hi", reasoning={"effort": effort})
            assert response.status == "completed", (model, effort)
        refused = error_of(lambda m=model: client.responses.create(  # type: ignore[misc]
            model=m, input="hi", reasoning={"effort": "max"}))
        assert refused.body == unsupported_effort(
            "reasoning.effort", "max", "'none', 'low', 'medium', 'high', and 'xhigh'")
