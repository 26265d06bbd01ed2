"""The provider's server-sent events, read without the SDK's per-event objects
(docs/decisions.md#0038): the JSON objects of an SSE body's ``data:`` lines (orjson), a
network chunk at a time, and the field readers both stream parsers use.

A stream is one small network chunk per token, so the reader (``llm.stream``) hands each
chunk here as it arrives and the event parsers (``llm.chat_events``,
``llm.responses_events``) take one object at a time: no layer of generators or
async iterators between the network and the answer costs CPU per chunk
(docs/decisions.md#0055).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from llm.types import LLMError


class SseParser:
    """The JSON objects of an SSE body's ``data:`` lines, fed a network chunk at a time,
    up to ``[DONE]`` (Chat Completions ends with it; a Responses stream ends after its
    terminal event), after which ``done`` is true and nothing more is read.

    Lines split on LF (CRLF and CR-only endings too) and are parsed as bytes, so a
    character split across chunks stays intact. ``event:`` lines (Responses repeats the
    type inside the data), comment lines (``: keep-alive``) and blank separators are
    skipped; an object with an ``error`` becomes an :class:`LLMError`, as the SDK raises
    it (retryable only before text). Objects come out in order, one at a time, so an
    error is raised only after everything before it in the same chunk was taken.
    """

    __slots__ = ("_rest", "done")

    def __init__(self) -> None:
        self._rest = b""
        self.done = False

    def payloads(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        """The objects of the lines ``chunk`` completes (none when it ends no line)."""
        rest = self._rest + chunk
        if b"\n" not in chunk and b"\r" not in chunk:
            self._rest = rest
            return
        if b"\r" in rest:
            rest = rest.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._rest = rest.split(b"\n")
        yield from self._parsed(lines)

    def end(self) -> Iterator[dict[str, Any]]:
        """The object of a last line the body ended without a line ending."""
        rest, self._rest = self._rest, b""
        if rest:
            yield from self._parsed([rest])

    def _parsed(self, lines: list[bytes]) -> Iterator[dict[str, Any]]:
        if self.done:
            return  # fed after [DONE]: nothing more is read
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self.done = True
                return
            payload = _loads(data)
            if not isinstance(payload, dict):
                continue
            if payload.get("error"):
                raise LLMError(
                    "upstream_error", "The model provider reported an error mid-answer.",
                    retryable=True, reason="stream_error",
                )
            yield payload


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses bytes that are not UTF-8; as the SDK's text decoding does, such a
    # byte reads as U+FFFD rather than failing the answer.
    try:
        return orjson.loads(data.decode("utf-8", "replace"))
    except orjson.JSONDecodeError as exc:
        raise LLMError(
            "upstream_error", "The model provider sent a malformed stream.", retryable=True,
            reason="malformed",
        ) from exc


def json_int(value: Any) -> int:
    """A token count as the provider sent it; anything but an int (null, missing) is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def json_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
