"""Prompt token accounting, prompt-cache emulation and rate-limit header counters.

Prompt tokens (documented approximation; OpenAI does not publish the o-series
chat framing cost):

    prompt_tokens = priming (3)
                  + tokens(json of `tools`, if any)
                  + sum over messages of (3 + tokens(text content) + tokens(name)
                                          + tokens(tool-call names and arguments))

Roles are not counted separately; the per-message overhead covers them.

Cached tokens: a request whose first N messages (N >= 1, at least
`cache_min_tokens` = 1024 tokens including the tools) equal those of an earlier
request for the same model reports the largest multiple of 128 of that shared
prefix, like OpenAI's automatic prompt caching. Seen prefixes live in a small LRU. A
`prompt_cache_key` is part of the prefix identity: the same prefix under the same key hits.

Cache writes: a request whose longest cacheable prefix (>= `cache_min_tokens`) was not
cached yet writes it, and reports the largest multiple of 128 of that prefix, less what
it read from the cache, as `input_tokens_details.cache_write_tokens` (openai-python
`InputTokensDetails.cache_write_tokens`; todays-models.md section 1: a prefix written to
the cache is its own price line on the gpt-6.x pages). A repeat of it reads it instead.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from emulator.tokens import count_tokens


@dataclass(frozen=True)
class PromptItem:
    text: str  # the text whose tokens are billed
    identity: str  # canonical JSON of the message, for prefix matching


@dataclass(frozen=True)
class PromptAccount:
    prompt_tokens: int
    cumulative: tuple[int, ...]  # tokens of tools + first k messages, k = 1..n
    digests: tuple[str, ...]  # prefix identity of the first k messages, k = 1..n


def account_prompt(
    model_id: str,
    tools_json: str,
    items: list[PromptItem],
    overhead: int,
    priming: int,
    cache_key: str = "",
) -> PromptAccount:
    running = count_tokens(tools_json)
    # prompt_cache_key routes requests to the cache that holds that key's prefixes: a
    # prefix seen under one key is a miss under another (and under none).
    digest = hashlib.sha1(f"{model_id}\x00{cache_key}\x00{tools_json}\x00".encode())
    cumulative: list[int] = []
    digests: list[str] = []
    for item in items:
        running += overhead + count_tokens(item.text)
        digest.update(item.identity.encode())
        digest.update(b"\x00")
        cumulative.append(running)
        digests.append(digest.copy().hexdigest())
    return PromptAccount(running + priming, tuple(cumulative), tuple(digests))


class PrefixCache:
    """LRU of prompt prefixes already seen."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def cached_tokens(self, account: PromptAccount, min_tokens: int, granularity: int) -> int:
        """Look up the longest cached prefix, then remember this request's prefixes."""
        return self.read_and_write(account, min_tokens, granularity)[0]

    def read_and_write(
        self, account: PromptAccount, min_tokens: int, granularity: int
    ) -> tuple[int, int]:
        """(tokens read from the cache, tokens written to it) for this request, then
        remember its prefixes."""
        eligible = [k for k, total in enumerate(account.cumulative) if total >= min_tokens]
        cached = 0
        written = 0
        with self._lock:
            for k in reversed(eligible):
                if account.digests[k] in self._seen:
                    cached = account.cumulative[k] // granularity * granularity
                    break
            if eligible and account.digests[eligible[-1]] not in self._seen:
                longest = account.cumulative[eligible[-1]] // granularity * granularity
                written = max(longest - cached, 0)
            for k in eligible:
                self._seen[account.digests[k]] = None
                self._seen.move_to_end(account.digests[k])
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        cached = min(cached, account.prompt_tokens)
        return cached, min(written, account.prompt_tokens - cached)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


class RateWindow:
    """Fixed one-minute window feeding the x-ratelimit-remaining-* headers (never enforced)."""

    def __init__(self) -> None:
        self._minute = 0
        self._requests = 0
        self._tokens = 0

    def record(self, tokens: int, limit_requests: int, limit_tokens: int) -> tuple[int, int]:
        minute = int(time.time() // 60)
        if minute != self._minute:
            self._minute, self._requests, self._tokens = minute, 0, 0
        self._requests += 1
        self._tokens += tokens
        return max(limit_requests - self._requests, 0), max(limit_tokens - self._tokens, 0)
