"""Azure OpenAI shapes: deployments, api-version rules, prompt/annotation chunks."""

from __future__ import annotations

import httpx2
import openai
import pytest

from emulator.server import EmulatorHandle
from tests.emulator.helpers import extra, raw_chunks, user


def test_azure_stream_starts_with_prompt_annotation(
    azure: openai.AzureOpenAI, emu: EmulatorHandle
) -> None:
    chunks = list(
        azure.chat.completions.create(
            model="my-o3-deployment",
            messages=user("hi"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    prompt = chunks[0]
    assert prompt.choices == [] and prompt.usage is None and prompt.id == ""
    assert (
        extra(prompt)["prompt_filter_results"][0]["content_filter_results"]["jailbreak"]["filtered"]
        is False
    )
    content = [
        c for c in chunks[1:] if c.choices and c.choices[0].delta and c.choices[0].delta.content
    ]
    assert content and all(
        extra(c.choices[0])["content_filter_results"]["hate"]
        == {"filtered": False, "severity": "safe"}
        for c in content
    )
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].model == "o3-mini-2025-01-31"
    entry = emu.emulator.journal[-1]
    assert entry["path"] == "/openai/deployments/my-o3-deployment/chat/completions"
    assert entry["query"] == {"api-version": "2024-12-01-preview"}
    assert entry["headers"]["api-key"] == "x"


def test_annotation_chunks_have_no_delta(azure: openai.AzureOpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"annotations": True, "reply_tokens": 20})
    chunks = list(azure.chat.completions.create(model="dep", messages=user("hi"), stream=True))
    annotations = [c for c in chunks if c.choices and c.choices[0].delta is None]
    assert len(annotations) == 3  # after chunks 8, 16 and the last one
    for chunk in annotations:
        choice = chunk.choices[0]
        assert chunk.id == "" and chunk.object == "" and choice.finish_reason is None
        assert "content_filter_offsets" in extra(choice)
    offsets = [extra(c.choices[0])["content_filter_offsets"] for c in annotations]

    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
    )
    assert offsets[-1]["end_offset"] == len(text)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_azure_content_filter_finish(azure: openai.AzureOpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "content_filter", "after_tokens": 3, "annotations": True})
    chunks = list(azure.chat.completions.create(model="dep", messages=user("hi"), stream=True))
    last = chunks[-1].choices[0]
    assert last.delta is None and last.finish_reason == "content_filter"
    assert extra(last)["content_filter_results"]["protected_material_text"]["filtered"] is True


def test_azure_non_streaming_shapes(azure: openai.AzureOpenAI) -> None:
    completion = azure.chat.completions.create(model="dep", messages=user("hi"))
    assert extra(completion)["prompt_filter_results"][0]["prompt_index"] == 0
    assert extra(completion.choices[0])["content_filter_results"]["violence"]["severity"] == "safe"


def test_deployment_mapping(azure: openai.AzureOpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.update_config({"deployments": {"chat-small": "gpt-4.1-mini"}})
    mapped = azure.chat.completions.create(model="chat-small", messages=user("hi"), temperature=0.3)
    assert mapped.model == "gpt-4.1-mini-2025-04-14"
    default = azure.chat.completions.create(model="anything-else", messages=user("hi"))
    assert default.model == "o3-mini-2025-01-31"
    emu.emulator.update_config({"strict_deployments": True})
    with pytest.raises(openai.NotFoundError) as info:
        azure.chat.completions.create(model="anything-else", messages=user("hi"))
    assert info.value.code == "DeploymentNotFound"


def test_api_key_or_bearer_is_required(emu: EmulatorHandle) -> None:
    url = emu.url + "/openai/deployments/dep/chat/completions?api-version=2024-12-01-preview"
    body = {"messages": user("hi")}
    assert httpx2.post(url, json=body).status_code == 401
    assert httpx2.post(url, json=body, headers={"api-key": "k"}).status_code == 200
    assert (
        httpx2.post(url, json=body, headers={"authorization": "Bearer entra-token"}).status_code
        == 200
    )


def test_missing_api_version_is_resource_not_found(emu: EmulatorHandle) -> None:
    response = httpx2.post(
        emu.url + "/openai/deployments/dep/chat/completions",
        json={"messages": user("hi")},
        headers={"api-key": "k"},
    )
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}
    malformed = httpx2.post(
        emu.url + "/openai/deployments/dep/chat/completions?api-version=yesterday",
        json={"messages": user("hi")},
        headers={"api-key": "k"},
    )
    assert malformed.status_code == 400


@pytest.mark.parametrize("version", ["2024-10-21", "2024-09-01-preview", "2024-08-01-preview"])
def test_old_api_versions_reject_o_series_features(emu: EmulatorHandle, version: str) -> None:
    old = openai.AzureOpenAI(
        azure_endpoint=emu.url, api_version=version, api_key="x", max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as info:
        old.chat.completions.create(model="dep", messages=user("hi"), reasoning_effort="low")
    assert info.value.param == "reasoning_effort" and info.value.type == "invalid_request_error"
    assert "requires api-version 2024-12-01-preview or later" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        old.chat.completions.create(
            model="dep", messages=[{"role": "developer", "content": "be brief"}, *user("hi")]
        )
    assert info.value.param == "messages[0].role"
    assert old.chat.completions.create(
        model="dep", messages=[{"role": "system", "content": "x"}, *user("hi")]
    ).choices


@pytest.mark.parametrize(
    "version", ["2024-12-01-preview", "2025-01-01-preview", "2025-04-01-preview", "2025-06-01"]
)
def test_current_api_versions_accept_o_series_features(emu: EmulatorHandle, version: str) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=emu.url, api_version=version, api_key="x", max_retries=0
    )
    completion = client.chat.completions.create(
        model="dep",
        messages=[{"role": "developer", "content": "be brief"}, *user("hi")],
        reasoning_effort="high",
        max_completion_tokens=5000,
    )
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 1024


def test_azure_v1_path_with_plain_client(emu: EmulatorHandle) -> None:
    client = openai.OpenAI(
        base_url=emu.url + "/openai/v1/", api_key=lambda: "entra-token", max_retries=0
    )
    chunks = list(
        client.chat.completions.create(model="my-deployment", messages=user("hi"), stream=True)
    )
    assert extra(chunks[0]).get("prompt_filter_results") is not None
    assert emu.emulator.journal[-1]["headers"]["authorization"] == "Bearer entra-token"
    assert emu.emulator.journal[-1]["path"] == "/openai/v1/chat/completions"


def test_azure_mode_on_openai_paths(emu: EmulatorHandle) -> None:
    emu.emulator.update_config({"azure": True})
    chunks = raw_chunks(
        emu.url + "/v1/chat/completions",
        {"model": "o3-mini", "messages": user("hi"), "stream": True},
    )
    assert chunks[0]["id"] == "" and chunks[0]["prompt_filter_results"]
