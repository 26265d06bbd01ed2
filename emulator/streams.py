"""Render a Plan as Chat Completions chunks / Responses events, and pace them on the wire.

Chat Completions chunks are rendered to bytes before the first content delta
goes out (bench deltas excepted, they embed the send time) from per-stream
string templates around one ``json.dumps`` of the delta text, so the paced loop
in ``run_script`` only sleeps and yields. Responses events are rendered as they
are sent (one ``json.dumps`` each) so sequence numbers follow emission order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import string
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import SERVER_ERROR_MESSAGE, server_error_object
from emulator.generation import Plan, random_id
from emulator.replies import Piece
from emulator.scenarios import BACKGROUND_FAULTS
from emulator.sealing import seal
from emulator.validation import GenerationRequest


def _fixed(fields: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """An event's fields, bound now and rendered when the event is sent."""
    return lambda: fields

class DropConnection(Exception):
    """Raised inside a started streaming body: the server then aborts the TCP connection."""


# --- pacing interpreter -------------------------------------------------------------


@dataclass
class Item:
    data: bytes | Callable[[], bytes]
    tokens: int = 0  # pacing weight; 0 = sent without waiting
    content: bool = False  # counts toward a fault's `after_tokens`


@dataclass
class Script:
    preamble: list[bytes]
    think_s: float
    body: list[Item]
    epilogue: list[bytes]
    tokens_per_second: float
    fault: str | None = None
    after_tokens: int = 0
    stall_s: float = 0.0
    # (fault, content tokens already sent) -> the bytes that end the stream.
    fault_tail: Callable[[str, int], list[bytes]] = field(default=lambda fault, tokens: [])
    # A background response: `drop` cuts a client's connection, not the response, which
    # goes on server-side (developers.openai.com/api/docs/guides/background): the script
    # yields CONNECTION_DROP where the connection drops and carries on.
    runs_on_after_drop: bool = False


# Where a background response's creating connection drops (an SSE comment, so it is
# harmless should it ever reach a client).
CONNECTION_DROP = b": connection dropped here\n\n"


async def run_script(script: Script) -> AsyncIterator[bytes]:
    for data in script.preamble:
        yield data
    if script.think_s > 0:
        await asyncio.sleep(script.think_s)
    loop = asyncio.get_running_loop()
    rate = script.tokens_per_second
    start = loop.time()
    paced = 0  # tokens whose send time has been scheduled; drives drift-free pacing
    content_tokens = 0
    pending = script.fault if script.fault not in BACKGROUND_FAULTS else None
    body = script.body
    last_content = max((i for i, item in enumerate(body) if item.content), default=-1)
    for index in range(len(body) + 1):
        item = body[index] if index < len(body) else None
        at_content = item is None or item.content or index > last_content
        if pending and at_content and content_tokens >= script.after_tokens:
            fault, pending = pending, None
            if fault == "stall":
                await asyncio.sleep(script.stall_s)
                start = loop.time() - (paced / rate if rate > 0 else 0.0)
            elif fault == "drop" and script.runs_on_after_drop:
                yield CONNECTION_DROP
            elif fault == "drop":
                raise DropConnection()
            else:
                for data in script.fault_tail(fault, content_tokens):
                    yield data
                return
        if item is None:
            break
        if item.tokens and rate > 0:
            delay = start + paced / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            paced += item.tokens
        yield item.data if isinstance(item.data, bytes) else item.data()
        if item.content:
            content_tokens += item.tokens
    for data in script.epilogue:
        yield data


# --- shared pieces ------------------------------------------------------------------

_PAD_ALPHABET = string.ascii_letters + string.digits
_PADS = ["".join(random.choices(_PAD_ALPHABET, k=random.randint(1, 16))) for _ in range(257)]
next_pad = itertools.cycle(_PADS).__next__

_SAFE = {"filtered": False, "severity": "safe"}
SAFE_RESULTS: dict[str, Any] = {
    "hate": _SAFE,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
PROMPT_RESULTS: dict[str, Any] = {
    **SAFE_RESULTS,
    "jailbreak": {"filtered": False, "detected": False},
}
ANNOTATION_RESULTS: dict[str, Any] = {
    **SAFE_RESULTS,
    "protected_material_code": {"filtered": False, "detected": False},
    "protected_material_text": {"filtered": False, "detected": False},
}
FILTERED_RESULTS: dict[str, Any] = {
    **SAFE_RESULTS,
    "protected_material_code": {"filtered": False, "detected": False},
    "protected_material_text": {"filtered": True, "detected": True},
}
ANNOTATION_EVERY = 8  # content chunks between two Azure async-filter annotation chunks


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def bench_text(index: int) -> str:
    return f" {index}@{time.time():.6f}"


def _chat_prompt_details(plan: Plan) -> dict[str, Any]:
    details: dict[str, Any] = {"cached_tokens": plan.cached_tokens, "audio_tokens": 0}
    # openai-python CompletionUsage.PromptTokensDetails.cache_write_tokens is optional
    # ("the unadjusted number of prompt tokens written to cache"): sent only when the
    # request wrote to the cache.
    if plan.cache_write_tokens:
        details["cache_write_tokens"] = plan.cache_write_tokens
    return details


def chat_usage(plan: Plan, visible_tokens: int) -> dict[str, Any]:
    completion = plan.reasoning_tokens + visible_tokens
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
        "prompt_tokens_details": _chat_prompt_details(plan),
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def responses_usage(plan: Plan, visible_tokens: int) -> dict[str, Any]:
    output = plan.reasoning_tokens + visible_tokens
    return {
        "input_tokens": plan.prompt_tokens,
        # openai-python ResponseUsage.InputTokensDetails: cache_write_tokens is required.
        "input_tokens_details": {"cached_tokens": plan.cached_tokens,
                                 "cache_write_tokens": plan.cache_write_tokens},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": plan.prompt_tokens + output,
    }


def _served_tier(requested: str | None) -> str:
    return requested if requested in ("flex", "scale", "priority") else "default"


def _pieces_until(pieces: tuple[Piece, ...], tokens: int) -> str:
    text: list[str] = []
    total = 0
    for piece, count in pieces:
        if total >= tokens:
            break
        text.append(piece)
        total += count
    return "".join(text)


# --- Chat Completions ---------------------------------------------------------------


class ChatRenderer:
    """Chat Completions chunks (streaming) and completion objects for one request."""

    def __init__(self, plan: Plan, request: GenerationRequest, azure: bool) -> None:
        self.plan = plan
        self.request = request
        self.azure = azure
        self.id = random_id("chatcmpl-", 29)
        self.created = int(time.time())
        self.model = request.profile.snapshot
        self.fingerprint = request.profile.system_fingerprint
        self._head = (
            f'{{"id":"{self.id}","object":"chat.completion.chunk","created":{self.created},'
            f'"model":"{self.model}","service_tier":"default",'
            f'"system_fingerprint":"{self.fingerprint}","choices":['
        )
        self._safe = f',"content_filter_results":{_dumps(SAFE_RESULTS)}' if azure else ""
        self._empty = ',"content_filter_results":{}' if azure else ""

    # -- chunk builders

    def _tail(self) -> str:
        return f',"obfuscation":"{next_pad()}"}}\n\n' if self.request.obfuscate else "}\n\n"

    def _chunk(self, delta: str, finish: str | None = None, filter_results: str = "") -> bytes:
        finish_json = "null" if finish is None else f'"{finish}"'
        return (
            f'data: {self._head}{{"index":0,"delta":{delta},"logprobs":null,'
            f'"finish_reason":{finish_json}{filter_results}}}],"usage":null{self._tail()}'
        ).encode()

    def _content(self, text: str, key: str = "content") -> bytes:
        return self._chunk(f'{{"{key}":{_dumps(text)}}}', filter_results=self._safe)

    def _usage_chunk(self, visible_tokens: int) -> bytes:
        usage = _dumps(chat_usage(self.plan, visible_tokens))
        # _head ends with '"choices":[' so "]" closes an empty choices list.
        return f'data: {self._head}],"usage":{usage}{self._tail()}'.encode()

    def _prompt_annotation(self) -> bytes:
        chunk = {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "prompt_filter_results": [
                {"prompt_index": 0, "content_filter_results": PROMPT_RESULTS}
            ],
            "choices": [],
            "usage": None,
        }
        return f"data: {_dumps(chunk)}\n\n".encode()

    @staticmethod
    def _annotation(results: dict[str, Any], finish: str | None, start: int, end: int) -> bytes:
        chunk = {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "content_filter_results": results,
                    "content_filter_offsets": {
                        "check_offset": start,
                        "start_offset": start,
                        "end_offset": end,
                    },
                }
            ],
            "usage": None,
        }
        return f"data: {_dumps(chunk)}\n\n".encode()

    # -- streaming

    def script(self) -> Script:
        plan = self.plan
        preamble: list[bytes] = [self._prompt_annotation()] if self.azure else []
        body: list[Item] = []
        if plan.kind == "tools":
            body = self._tool_items()
        else:
            key = "refusal" if plan.kind == "refusal" else "content"
            role = (
                '{"role":"assistant","content":null,"refusal":""}'
                if plan.kind == "refusal"
                else '{"role":"assistant","content":"","refusal":null}'
            )
            # Nothing is streamed while the model reasons; the role chunk comes right
            # before the content (openai-wire.md §3.7: the Discourse capture, mezmo/aura#62).
            body = [Item(self._chunk(role, filter_results=self._empty))]
            body += self._bench_items() if plan.kind == "bench" else self._text_items(key)
        epilogue = [self._chunk("{}", plan.finish_reason, self._empty)]
        if self.request.include_usage:
            epilogue.append(self._usage_chunk(plan.visible_tokens))
        epilogue.append(b"data: [DONE]\n\n")
        return Script(
            preamble=preamble,
            think_s=plan.think_s,
            body=body,
            epilogue=epilogue,
            tokens_per_second=plan.tokens_per_second,
            fault=plan.fault,
            after_tokens=plan.after_tokens,
            stall_s=plan.stall_s,
            fault_tail=self._fault_tail,
        )

    def _text_items(self, key: str) -> list[Item]:
        items: list[Item] = []
        annotate = self.azure and self.plan.annotations
        offset = checked = 0
        for n, (text, tokens) in enumerate(self.plan.pieces, start=1):
            items.append(Item(self._content(text, key), tokens, content=True))
            offset += len(text)
            if annotate and (n % ANNOTATION_EVERY == 0 or n == len(self.plan.pieces)):
                items.append(Item(self._annotation(ANNOTATION_RESULTS, None, checked, offset)))
                checked = offset
        return items

    def _bench_items(self) -> list[Item]:
        def render(index: int) -> Callable[[], bytes]:
            return lambda: self._content(bench_text(index))

        return [Item(render(i), size, content=True) for i, size in enumerate(self.plan.bench_sizes)]

    def _tool_items(self) -> list[Item]:
        items: list[Item] = []
        for index, call in enumerate(self.plan.tool_calls):
            opening = {
                "index": index,
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            delta = {"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None}
            if index:
                delta = {"tool_calls": [opening]}
            items.append(Item(self._chunk(_dumps(delta), filter_results=self._safe), content=True))
            for fragment, tokens in call.pieces:
                fragment_delta = {
                    "tool_calls": [{"index": index, "function": {"arguments": fragment}}]
                }
                items.append(
                    Item(
                        self._chunk(_dumps(fragment_delta), filter_results=self._safe), tokens, True
                    )
                )
        return items

    def _fault_tail(self, fault: str, content_tokens: int) -> list[bytes]:
        if fault == "error_event":
            return [f"data: {_dumps({'error': server_error_object()})}\n\n".encode()]
        if fault == "content_filter":
            offset = len(_pieces_until(self.plan.pieces, content_tokens))
            tail = [self._annotation(FILTERED_RESULTS, "content_filter", offset, offset)]
            if self.request.include_usage:
                tail.append(self._usage_chunk(content_tokens))
            tail.append(b"data: [DONE]\n\n")
            return tail
        return []  # truncate: end the body cleanly, without finish, usage or [DONE]

    # -- non-streaming

    def completion(self) -> dict[str, Any]:
        plan = self.plan
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
        }
        finish = plan.finish_reason
        visible = plan.visible_tokens
        filter_results = SAFE_RESULTS
        if plan.kind == "tools":
            message["tool_calls"] = [
                {
                    "id": c.call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in plan.tool_calls
            ]
        elif plan.kind == "bench":
            message["content"] = "".join(bench_text(i) for i in range(len(plan.bench_sizes)))
        elif plan.fault == "content_filter":
            head = plan.head_pieces()
            message["content"] = "".join(text for text, _ in head)
            visible = sum(tokens for _, tokens in head)
            finish = "content_filter"
            filter_results = FILTERED_RESULTS
        elif plan.kind == "refusal":
            message["refusal"] = plan.text
        else:
            message["content"] = plan.text
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish,
        }
        if self.azure:
            choice["content_filter_results"] = filter_results
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": chat_usage(plan, visible),
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
        }
        if self.azure:
            body["prompt_filter_results"] = [
                {"prompt_index": 0, "content_filter_results": PROMPT_RESULTS}
            ]
        return body


# --- Responses -----------------------------------------------------------------------


class ResponsesRenderer:
    """Responses API objects and named stream events for one request.

    Events are rendered when sent (one json.dumps each), so `sequence_number`
    follows emission order even when a fault cuts the stream short.
    """

    def __init__(self, plan: Plan, request: GenerationRequest, body: dict[str, Any]) -> None:
        self.plan = plan
        self.request = request
        self.body = body
        self.id = "resp_" + random_id("", 48).lower()
        self.created_at = int(time.time())
        self.reasoning_id = "rs_" + random_id("", 48).lower()
        self.message_id = "msg_" + random_id("", 48).lower()
        self.seq = 0
        self._sent_text: list[str] = []  # visible text streamed so far

    # -- objects

    def _reasoning_item(self, with_summary: bool) -> dict[str, Any]:
        summary: list[dict[str, Any]] = []
        if with_summary and self.plan.summary is not None:
            summary = [{"type": "summary_text", "text": "".join(t for t, _ in self.plan.summary)}]
        item: dict[str, Any] = {"id": self.reasoning_id, "type": "reasoning", "summary": summary}
        if with_summary and self.request.encrypted_reasoning:
            # Like OpenAI, the blob comes with the finished item (output_item.done and the
            # final response), not with output_item.added.
            item["encrypted_content"] = seal(
                item_id=self.reasoning_id, model=self.request.profile.snapshot,
                reasoning_tokens=self.plan.reasoning_tokens,
            )
        return item

    def _part(self, text: str) -> dict[str, Any]:
        if self.plan.kind == "refusal":
            return {"type": "refusal", "refusal": text}
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _message_item(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [self._part(text)]
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _call_item(self, call_index: int, completed: bool) -> dict[str, Any]:
        call = self.plan.tool_calls[call_index]
        return {
            "id": "fc_" + call.call_id.removeprefix("call_"),
            "type": "function_call",
            "status": "completed" if completed else "in_progress",
            "arguments": call.arguments if completed else "",
            "call_id": call.call_id,
            "name": call.name,
        }

    def response_object(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        incomplete_reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": body.get("background") is True,
            "error": error,
            "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.request.profile.snapshot,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": self.request.effort, "summary": self.request.summary},
            # The tier that served the request, which is what it is billed at.
            "service_tier": _served_tier(self.request.service_tier),
            "store": body.get("store", True),
            "temperature": 1.0,
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": body.get("tools") or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    def _output(self, text: str | None, message_status: str) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = []
        if self.request.profile.reasoning:
            output.append(self._reasoning_item(with_summary=True))
        if self.plan.kind == "tools":
            output.extend(self._call_item(i, True) for i in range(len(self.plan.tool_calls)))
        elif text is not None:
            output.append(self._message_item(message_status, text))
        return output

    def _has_message(self) -> bool:
        return self.plan.kind == "bench" or (
            self.plan.kind in ("text", "refusal") and bool(self.plan.pieces)
        )

    def _status(self) -> tuple[str, str | None]:
        if self.plan.finish_reason == "length":
            return "incomplete", "max_output_tokens"
        return "completed", None

    def response(self) -> dict[str, Any]:
        """The non-streaming response object."""
        plan = self.plan
        status, reason = self._status()
        visible = plan.visible_tokens
        text: str | None = None
        if plan.kind == "bench":
            text = "".join(bench_text(i) for i in range(len(plan.bench_sizes)))
        elif self._has_message():
            text = plan.text
        if plan.fault == "content_filter" and plan.kind != "tools":
            head = plan.head_pieces()
            text = "".join(t for t, _ in head)
            visible = sum(n for _, n in head)
            status, reason = "incomplete", "content_filter"
        output = self._output(text, "completed" if status == "completed" else "incomplete")
        return self.response_object(status, output, responses_usage(plan, visible), reason)

    # -- streaming

    def _event(self, type_: str, fields: dict[str, Any], delta: bool = False) -> bytes:
        payload = {"type": type_, "sequence_number": self.seq, **fields}
        if delta and self.request.obfuscate:
            payload["obfuscation"] = next_pad()
        self.seq += 1
        return f"event: {type_}\ndata: {_dumps(payload)}\n\n".encode()

    def _later(
        self, type_: str, fields: Callable[[], dict[str, Any]], delta: bool = False
    ) -> Callable[[], bytes]:
        return lambda: self._event(type_, fields(), delta)

    def script(self) -> Script:
        plan = self.plan
        in_progress = self.response_object("in_progress", [], None)
        # The server sends response.created and response.in_progress at once, then nothing
        # while the model reasons (minutes at high effort), then the reasoning item, its
        # summary and the output (developers.openai.com/api/docs/guides/background;
        # openai-wire.md §3.8): the think pause falls between the preamble and the body.
        preamble = [
            self._event("response.created", {"response": in_progress}),
            self._event("response.in_progress", {"response": in_progress}),
        ]
        body: list[Item] = []
        output_index = 0
        if self.request.profile.reasoning:
            added = {"output_index": 0, "item": self._reasoning_item(with_summary=False)}
            body.append(Item(self._later("response.output_item.added", _fixed(added))))
            body.extend(self._summary_items())
            done = {"output_index": 0, "item": self._reasoning_item(with_summary=True)}
            body.append(Item(self._later("response.output_item.done", lambda: done)))
            output_index = 1
        if plan.kind == "tools":
            body.extend(self._call_items(output_index))
        elif self._has_message():
            body.extend(self._message_items(output_index))
        body.append(Item(self._terminal))
        return Script(
            preamble=preamble,
            think_s=plan.think_s,
            body=body,
            epilogue=[],
            tokens_per_second=plan.tokens_per_second,
            fault=plan.fault,
            after_tokens=plan.after_tokens,
            stall_s=plan.stall_s,
            fault_tail=self._fault_tail,
        )

    def queued_events(self) -> list[bytes]:
        """The start of a background response that never leaves the queue (the
        ``stuck_queued`` fault): ``response.created`` and ``response.queued``, status
        ``queued`` (openai-python ``ResponseQueuedEvent``)."""
        queued = self.response_object("queued", [], None)
        return [self._event("response.created", {"response": queued}),
                self._event("response.queued", {"response": queued})]

    def _terminal(self) -> bytes:
        status, reason = self._status()
        text = "".join(self._sent_text) if self._has_message() else None
        output = self._output(text, "completed" if status == "completed" else "incomplete")
        usage = responses_usage(self.plan, self.plan.visible_tokens)
        event = "response.completed" if status == "completed" else "response.incomplete"
        return self._event(event, {"response": self.response_object(status, output, usage, reason)})

    def _summary_items(self) -> list[Item]:
        summary = self.plan.summary
        if summary is None:
            return []
        common = {"item_id": self.reasoning_id, "output_index": 0, "summary_index": 0}
        text = "".join(t for t, _ in summary)
        items = [
            Item(
                self._later(
                    "response.reasoning_summary_part.added",
                    lambda: {**common, "part": {"type": "summary_text", "text": ""}},
                )
            )
        ]
        for piece, tokens in summary:
            fields = {**common, "delta": piece}
            items.append(
                Item(
                    self._later("response.reasoning_summary_text.delta", _fixed(fields), True),
                    tokens,
                )
            )
        items.append(
            Item(
                self._later(
                    "response.reasoning_summary_text.done", lambda: {**common, "text": text}
                )
            )
        )
        part_done = {**common, "part": {"type": "summary_text", "text": text}}
        items.append(Item(self._later("response.reasoning_summary_part.done", lambda: part_done)))
        return items

    def _message_items(self, output_index: int) -> list[Item]:
        plan = self.plan
        common = {"item_id": self.message_id, "output_index": output_index, "content_index": 0}
        refusal = plan.kind == "refusal"
        added = {"output_index": output_index, "item": self._message_item("in_progress", None)}
        items = [
            Item(self._later("response.output_item.added", lambda: added)),
            Item(
                self._later(
                    "response.content_part.added", lambda: {**common, "part": self._part("")}
                )
            ),
        ]
        delta_type = "response.refusal.delta" if refusal else "response.output_text.delta"

        def delta_fields(text: str | None, index: int) -> Callable[[], dict[str, Any]]:
            def build() -> dict[str, Any]:
                piece = bench_text(index) if text is None else text
                self._sent_text.append(piece)
                fields: dict[str, Any] = {**common, "delta": piece}
                if not refusal:
                    fields["logprobs"] = []
                return fields

            return build

        if plan.kind == "bench":
            for i, size in enumerate(plan.bench_sizes):
                items.append(Item(self._later(delta_type, delta_fields(None, i), True), size, True))
        else:
            for i, (piece, tokens) in enumerate(plan.pieces):
                items.append(
                    Item(self._later(delta_type, delta_fields(piece, i), True), tokens, True)
                )
        status = "completed" if plan.finish_reason != "length" else "incomplete"

        def text_done() -> dict[str, Any]:
            text = "".join(self._sent_text)
            return (
                {**common, "refusal": text} if refusal else {**common, "text": text, "logprobs": []}
            )

        done_type = "response.refusal.done" if refusal else "response.output_text.done"
        items.append(Item(self._later(done_type, text_done)))
        items.append(
            Item(
                self._later(
                    "response.content_part.done",
                    lambda: {**common, "part": self._part("".join(self._sent_text))},
                )
            )
        )
        items.append(
            Item(
                self._later(
                    "response.output_item.done",
                    lambda: {
                        "output_index": output_index,
                        "item": self._message_item(status, "".join(self._sent_text)),
                    },
                )
            )
        )
        return items

    def _call_items(self, first_index: int) -> list[Item]:
        items: list[Item] = []
        for offset, call in enumerate(self.plan.tool_calls):
            output_index = first_index + offset
            opened = self._call_item(offset, completed=False)
            closed = self._call_item(offset, completed=True)
            common = {"item_id": opened["id"], "output_index": output_index}
            added = {"output_index": output_index, "item": opened}
            items.append(
                Item(self._later("response.output_item.added", _fixed(added)), content=True)
            )
            for fragment, tokens in call.pieces:
                fields = {**common, "delta": fragment}
                items.append(
                    Item(
                        self._later(
                            "response.function_call_arguments.delta", _fixed(fields), True
                        ),
                        tokens,
                        True,
                    )
                )
            args_done = {**common, "arguments": call.arguments, "name": call.name}
            items.append(
                Item(self._later("response.function_call_arguments.done", _fixed(args_done)))
            )
            item_done = {"output_index": output_index, "item": closed}
            items.append(Item(self._later("response.output_item.done", _fixed(item_done))))
        return items

    def _fault_tail(self, fault: str, content_tokens: int) -> list[bytes]:
        if fault == "error_event":
            error = self._event(
                "error", {"code": "server_error", "message": SERVER_ERROR_MESSAGE, "param": None}
            )
            failed = self.response_object(
                "failed", [], None, error={"code": "server_error", "message": SERVER_ERROR_MESSAGE}
            )
            return [error, self._event("response.failed", {"response": failed})]
        if fault == "content_filter":
            text = "".join(self._sent_text) if self.plan.kind != "tools" else None
            output = self._output(text, "incomplete")
            usage = responses_usage(self.plan, content_tokens)
            response = self.response_object("incomplete", output, usage, "content_filter")
            return [self._event("response.incomplete", {"response": response})]
        return []
