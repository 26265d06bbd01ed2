"""The provider's server-sent events, read without the SDK's per-event objects
(docs/decisions.md#0038): the lines of an SSE body, the JSON objects of its ``data:``
lines (orjson), and the field readers both stream parsers use.

The parsers are plain generators fed a line at a time. Where the lines run out they yield
``PAUSE``: the stream (``llm.stream.AsyncChatStream``) reads more from the network and
asks the same generator for its next event, so no layer of async generators costs CPU
per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from llm.types import LLMError


class _Pause:
    """Marks where the parsers ran out of lines: the reader fetches more and asks the
    same parser for its next event."""


PAUSE = _Pause()


def sse_payloads(lines: Iterator[Any]) -> Iterator[Any]:
    """The JSON objects of an SSE stream's ``data:`` lines (orjson), up to ``[DONE]``
    (Chat Completions ends with it; a Responses stream ends after its terminal event).

    ``event:`` lines (Responses repeats the type inside the data), comment lines
    (``: keep-alive``) and blank separators are skipped; an object with an ``error``
    becomes an :class:`LLMError`, as the SDK raises it (retryable only before text).
    """
    for line in lines:
        if line is PAUSE:
            yield PAUSE  # the reader refills the lines
            continue
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise LLMError(
                "upstream_error", "The model provider sent a malformed stream.", retryable=True,
                reason="malformed",
            ) from exc
        if not isinstance(payload, dict):
            continue
        if payload.get("error"):
            raise LLMError(
                "upstream_error", "The model provider reported an error mid-answer.",
                retryable=True, reason="stream_error",
            )
        yield payload


class SseLines:
    """The lines of an SSE body, fed a network chunk at a time: ``feed`` returns the lines
    the chunk completed, ``end`` the last one when the body ends without a line ending.
    Split here rather than through the SDK's and httpx's text and line decoders, and a
    chunk at a time rather than a line at a time: a stream is one small chunk per token,
    and each await of an async iterator costs CPU per chunk. Lines split on LF (CRLF and
    CR-only endings too), UTF-8 decoded whole, so a character split across chunks stays
    intact."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[str]:
        rest = self._rest + chunk
        if b"\n" not in rest and b"\r" not in rest:
            self._rest = rest
            return []
        *complete, self._rest = rest.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]

    def end(self) -> list[str]:
        rest, self._rest = self._rest, b""
        return [rest.decode("utf-8", "replace")] if rest else []


def json_int(value: Any) -> int:
    """A token count as the provider sent it; anything but an int (null, missing) is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def json_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
