"""Token counts as the provider makes them: o200k_base, counted by tiktoken, offline.

The o-series and gpt-5 and later models count with o200k_base: tiktoken 0.14.0
``tiktoken/model.py`` maps the prefixes ``o1-``, ``o3-``, ``o4-mini-`` and ``gpt-5`` to it
(``encoding_for_model("o3-mini")`` returns it; shared/reference/openai-wire.md section 7).
The emulator keeps its own counter, as the provider does: the product's estimates are
checked against it, not shared with it (tests/llm/test_emulator_contract.py).

tiktoken downloads its vocabulary at run time, which fails without network. The
``bpe-openai`` wheel ships the same file (the sha256 tiktoken pins), so it is gunzipped
into tiktoken's cache directory under the name tiktoken looks for (sha1 of the download
URL), and ``TIKTOKEN_CACHE_DIR`` points there before the first ``tiktoken.get_encoding``.
Cache directory: ``$TIKTOKEN_CACHE_DIR`` if set, else ``<repo>/var/tiktoken``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
from pathlib import Path

import tiktoken

ENCODING_NAME = "o200k_base"
VOCABULARY_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
# tiktoken's cache keeps a vocabulary under the sha1 of its URL (tiktoken/load.py).
CACHE_FILE_NAME = hashlib.sha1(VOCABULARY_URL.encode()).hexdigest()
REPO_ROOT = Path(__file__).resolve().parent.parent

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


def cache_dir() -> Path:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    return Path(configured) if configured else REPO_ROOT / "var" / "tiktoken"


def _wheel_vocabulary() -> Path:
    # find_spec locates the package without importing it (and its large extension).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the o200k_base vocabulary is not cached and the bpe-openai wheel is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "o200k_base.tiktoken.gz"


def ensure_vocabulary() -> Path:
    """tiktoken's cache holds o200k_base (copied from the wheel if missing); its path."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CACHE_FILE_NAME
    if not target.exists():
        # A temporary name, then a rename: a process starting beside this one never reads
        # a half-written vocabulary.
        fd, partial = tempfile.mkstemp(dir=directory, prefix=".emulator-o200k_base.")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(_wheel_vocabulary(), "rb") as packed:
                shutil.copyfileobj(packed, out)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
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
    """o200k_base tokens in ``text``; special-token markup a user typed is plain text."""
    return len(encode(text))


def encode(text: str) -> list[int]:
    return get_encoding().encode_ordinary(text) if text else []
