from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.tokens import CACHE_FILE_NAME, count_tokens, get_encoding

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_count_tokens_uses_o200k_base() -> None:
    assert get_encoding().name == "o200k_base"
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    # Special-token markup typed by a user counts as plain text instead of raising.
    assert count_tokens("<|endoftext|>") > 1


@pytest.mark.slow  # starts a child process
def test_fresh_cache_dir_is_filled_offline(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken"
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(cache),
        # Any download attempt would fail fast through this dead proxy.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "PYTHONPATH": str(REPO_ROOT),
    }
    code = "from emulator.tokens import count_tokens; print(count_tokens('Hello, offline world!'))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == str(count_tokens("Hello, offline world!"))
    assert (cache / CACHE_FILE_NAME).stat().st_size > 1_000_000
