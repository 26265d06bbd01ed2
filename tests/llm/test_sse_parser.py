"""The SSE parser the worker's stream reads with (llm.sse.SseParser), fed network chunks
as they arrive. How the stream uses it against the emulator over real HTTP is in
test_async_stream.py."""

from __future__ import annotations

import pytest

from llm.sse import SseParser
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
