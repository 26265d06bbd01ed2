"""The SSE parser the worker's stream reads with (llm.sse.SseParser), fed network chunks
as they arrive. How the stream uses it against the emulator over real HTTP is in
test_async_stream.py."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx2
import pytest

from llm.sse import SseParser
from llm.stream import _body_chunks
from llm.types import LLMError


def test_lines_split_across_chunks_keep_characters_and_line_endings() -> None:
    chunks = [b'data: {"a":', b"1}\r", b'\n\ndata: {"b":"\xc3', b'\xa9"}\r\n', b": keep-alive\n",
              b'event: x\ndata: {"c":3}']
    sse = SseParser()

    fed = [list(sse.payloads(chunk)) for chunk in chunks]

    # A chunk completes the lines it ends; one that ends none gives none yet.
    assert fed[0] == [] and fed[1] == [{"a": 1}] and fed[2] == []
    assert fed[3] == [{"b": "\u00e9"}] and fed[4] == [] and fed[5] == []
    # The body ended without a line ending: its last line still counts, once.
    assert list(sse.end()) == [{"c": 3}]
    assert list(sse.end()) == []
    assert not sse.done


def test_done_ends_the_stream_and_nothing_after_it_is_read() -> None:
    sse = SseParser()

    first = list(sse.payloads(b'data: {"a":1}\n\ndata: [DONE]\n\ndata: {"b":2}\n\n'))

    assert first == [{"a": 1}] and sse.done
    assert list(sse.payloads(b'data: {"c":3}\n\n')) == []


def test_an_error_object_is_raised_after_what_came_before_it_in_the_same_chunk() -> None:
    sse = SseParser()
    payloads = sse.payloads(b'data: {"a":1}\n\ndata: {"error":{"message":"overloaded"}}\n\n')

    assert next(payloads) == {"a": 1}
    with pytest.raises(LLMError) as raised:
        next(payloads)
    assert raised.value.retryable and raised.value.reason == "stream_error"


def test_bytes_that_are_not_utf8_read_as_replacement_characters_as_the_sdk_decodes() -> None:
    sse = SseParser()

    assert list(sse.payloads(b'data: {"t":"a\xffb"}\n')) == [{"t": "a\ufffdb"}]


@pytest.mark.parametrize("line", [b"data: {not json\n", b'data: {"a":\n'])
def test_a_malformed_object_fails_the_stream_as_retryable(line: bytes) -> None:
    with pytest.raises(LLMError) as raised:
        list(SseParser().payloads(line))
    assert raised.value.retryable and raised.value.reason == "malformed"


def test_data_that_is_not_an_object_is_skipped() -> None:
    assert list(SseParser().payloads(b"data: [1, 2]\ndata: 3\ndata: {}\n")) == [{}]


class _Chunks(httpx2.AsyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def _read(response: httpx2.Response) -> list[bytes]:
    return [chunk async for chunk in _body_chunks(response)]


async def test_an_unencoded_body_is_read_chunk_by_chunk_from_the_transport() -> None:
    response = httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               stream=_Chunks(b"data: {", b'"a":1}\n\n'))

    assert await _read(response) == [b"data: {", b'"a":1}\n\n']
    assert response.is_stream_consumed  # a second read is refused, as after aiter_bytes
    with pytest.raises(httpx2.StreamConsumed):
        await _read(response)


async def test_an_encoded_body_is_decoded_before_the_parser_sees_it() -> None:
    body = gzip.compress(b'data: {"a":1}\n\ndata: [DONE]\n\n')
    response = httpx2.Response(200, headers={"content-encoding": "gzip"},
                               stream=_Chunks(body[:10], body[10:]))

    sse = SseParser()
    payloads = [payload for chunk in await _read(response) for payload in sse.payloads(chunk)]

    assert payloads == [{"a": 1}] and sse.done
