"""The product and the emulator agree where each keeps its own copy of a fact.

Neither imports the other (the import-linter contracts): the product names the offline
demo's model itself, and the emulator counts tokens as the provider does. These tests
import both and check the copies match.
"""

from __future__ import annotations

import pytest

from emulator import tokens as emulator_tokens
from emulator.models import DEFAULT_MODEL, MODEL_CATALOGUE
from llm import tokens as product_tokens
from llm.catalog import find_entry
from llm.catalog.sync import DEMO_MODEL


def test_the_demo_model_is_the_one_the_emulator_serves_by_default() -> None:
    assert DEMO_MODEL == DEFAULT_MODEL
    assert DEMO_MODEL in MODEL_CATALOGUE
    assert find_entry("openai", DEMO_MODEL) is not None  # the demo profile is in the catalog


def test_the_product_counts_tokens_with_the_encoding_the_emulator_bills() -> None:
    assert product_tokens.ENCODING_NAME == emulator_tokens.ENCODING_NAME == "o200k_base"
    assert product_tokens.CACHE_FILE_NAME == emulator_tokens.CACHE_FILE_NAME


@pytest.mark.parametrize("text", [
    "",
    "hello world",
    "Größe, naïve café — ½ × 3 = 1.5 🚀",
    "<|endoftext|> typed by a person",
    "def f(x):\n    return x ** 2\n\n\n",
    "数学の問題を解いてください。",
])
def test_the_product_and_the_emulator_count_the_same_tokens(text: str) -> None:
    assert product_tokens.count_tokens(text) == emulator_tokens.count_tokens(text)
