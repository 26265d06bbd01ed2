"""Offline o200k_base token counting for the product's estimates (budgets, context cuts).

The emulator, standing in for the provider, counts with its own counter
(``emulator.tokens``); tests/llm/test_emulator_contract.py checks the two agree.

tiktoken downloads its BPE vocabulary at run time, which fails without network.
The ``bpe-openai`` wheel ships the identical file (same sha256 that tiktoken
pins), so we gunzip it into tiktoken's cache directory under the name tiktoken
looks for and point ``TIKTOKEN_CACHE_DIR`` at it before the first
``tiktoken.get_encoding`` call.

Cache directory: ``$TIKTOKEN_CACHE_DIR`` if set, else ``<repo>/var/tiktoken``.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import tempfile
import threading
from pathlib import Path

import tiktoken

ENCODING_NAME = "o200k_base"
# What a chat message costs beyond its text (role and separators), as the provider counts.
PER_MESSAGE_OVERHEAD = 3
# tiktoken stores each vocabulary as sha1(<download url>); this is the digest of
# https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken
CACHE_FILE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"
REPO_ROOT = Path(__file__).resolve().parent.parent

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


def cache_dir() -> Path:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    return Path(configured) if configured else REPO_ROOT / "var" / "tiktoken"


def _bundled_vocabulary() -> Path:
    # find_spec does not import bpe_openai, so its 74 MB extension never loads.
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "o200k_base vocabulary is not cached and the bpe-openai wheel is not installed"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    return package_dir / "data" / "o200k_base.tiktoken.gz"


def ensure_vocabulary() -> Path:
    """Make sure tiktoken's cache holds o200k_base; return the cached file path."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CACHE_FILE_NAME
    if not target.exists():
        source = _bundled_vocabulary()
        # Write-then-rename so concurrent processes never read a half-written file.
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".o200k_base.")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(source, "rb") as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    return target


def get_encoding() -> tiktoken.Encoding:
    """The o200k_base encoding, loaded once per process without network access."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                ensure_vocabulary()
                _encoding = tiktoken.get_encoding(ENCODING_NAME)
    return _encoding


def count_tokens(text: str) -> int:
    """Number of o200k_base tokens in ``text`` (special-token markup counts as plain text)."""
    if not text:
        return 0
    return len(get_encoding().encode_ordinary(text))


def message_tokens(text: str) -> int:
    """One message's share of a prompt: its text and the per-message overhead. Stored with
    the message once its text is final (``Message.content_tokens``)."""
    return PER_MESSAGE_OVERHEAD + count_tokens(text)


def encode(text: str) -> list[int]:
    return get_encoding().encode_ordinary(text) if text else []
