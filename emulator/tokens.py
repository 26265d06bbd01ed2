"""The emulator counts tokens exactly as the product does: with the product's counter.

Token counting belongs to the product (budgets and context cuts depend on it); the
emulator, a stand-in for the provider, imports it rather than the other way round.
"""

from __future__ import annotations

from llm.tokens import (
    CACHE_FILE_NAME,
    ENCODING_NAME,
    REPO_ROOT,
    cache_dir,
    count_tokens,
    encode,
    ensure_vocabulary,
    get_encoding,
)

__all__ = [
    "CACHE_FILE_NAME", "ENCODING_NAME", "REPO_ROOT", "cache_dir", "count_tokens", "encode",
    "ensure_vocabulary", "get_encoding",
]
