"""What the emulated model says: default Markdown reply, JSON-schema values, demo tool rules.

Demo tool rules (only when tools are offered and the last message is a user message):

* arithmetic -- "what is 12*(3+4)", "calculate 2^10", "compute (1+2)/3", or any message
  containing "calculate": call the first tool whose name contains "calc" or "arith"
  with ``{"expression": "<the expression>"}``;
* conversion -- "convert 5 km to mi": call the first tool whose name contains
  "convert" with ``{"value": 5, "from_unit": "km", "to_unit": "mi"}``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from emulator.tokens import get_encoding

Piece = tuple[str, int]  # (text, number of tokens it carries)

_FILLER = (
    "The emulator streams this answer token by token so the chat interface can be exercised offline.",
    "Replies are deterministic, which keeps demos and tests reproducible.",
    "Reasoning tokens are billed but never shown, just like on the real o-series models.",
    "Configure an API key to talk to a real model instead of this offline stand-in.",
)


def topic_words(text: str, limit: int, max_chars: int = 80) -> str:
    words = text.replace('"', "'").split()
    topic = " ".join(words[:limit])
    shortened = len(words) > limit or len(topic) > max_chars
    return topic[:max_chars].rstrip() + " …" if shortened else topic


@lru_cache(maxsize=1024)
def default_reply(user_text: str, target_tokens: int) -> str:
    """Markdown answer of at least ``target_tokens`` tokens; callers cut it to exactly that."""
    topic = topic_words(user_text, 12) or "your message"
    text = "\n\n".join(
        (
            f'You asked: "{topic}". Here is a short answer from the offline demo model.',
            '```python\nprint("hello, world")\n```',
            "Euler's identity: $e^{i\\pi}+1=0$.",
        )
    )
    encoding = get_encoding()
    total = len(encoding.encode_ordinary(text))
    filler: list[str] = []
    while total < target_tokens:
        # Estimate sentence by sentence, then confirm once on the whole text.
        while total < target_tokens:
            sentence = _FILLER[len(filler) % len(_FILLER)]
            filler.append(sentence)
            total += _sentence_tokens(sentence)
        total = len(encoding.encode_ordinary(text + "\n\n" + " ".join(filler)))
    if filler:
        text += "\n\n" + " ".join(filler)
    return text


@lru_cache(maxsize=16)
def _sentence_tokens(sentence: str) -> int:
    return len(get_encoding().encode_ordinary(sentence))


@lru_cache(maxsize=2048)
def split_text(text: str, chunk_tokens: int, limit: int | None = None) -> tuple[Piece, ...]:
    """Split into streamable pieces of ``chunk_tokens`` real o200k tokens each.

    Done once per distinct reply (cached), never per chunk. A piece is extended
    past ``chunk_tokens`` only when a token ends inside a multi-byte character,
    so every piece is valid text.
    """
    encoding = get_encoding()
    tokens = encoding.encode_ordinary(text)
    if limit is not None:
        tokens = tokens[:limit]
    pieces: list[Piece] = []
    buffer = b""
    count = 0
    for token in tokens:
        buffer += encoding.decode_single_token_bytes(token)
        count += 1
        if count >= chunk_tokens:
            try:
                pieces.append((buffer.decode("utf-8"), count))
            except UnicodeDecodeError:
                continue
            buffer, count = b"", 0
    if count:
        pieces.append((buffer.decode("utf-8", errors="replace"), count))
    return tuple(pieces)


def pieces_tokens(pieces: tuple[Piece, ...]) -> int:
    return sum(n for _, n in pieces)


def pieces_text(pieces: tuple[Piece, ...]) -> str:
    return "".join(text for text, _ in pieces)


def tool_result_reply(tool_name: str | None, content: str) -> str:
    quoted = "\n".join(f"> {line}" for line in (content.strip() or "(empty)").splitlines())
    source = f"The `{tool_name}` tool" if tool_name else "The tool"
    return f"{source} returned:\n\n{quoted}\n\nThat is the result of the requested operation."


def default_reasoning_summary(user_text: str) -> str:
    topic = topic_words(user_text, 12) or "the message"
    return (
        "**Planning a concise answer**\n\n"
        f'The user asked: "{topic}". I will give a short explanation, '
        "a small Python example and one formula."
    )


# --- structured outputs -------------------------------------------------------------


def schema_value(schema: Any, title: str, root: Any = None, depth: int = 0) -> Any:
    """A value that validates against simple JSON schemas (objects, arrays, scalars, $ref)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return schema_value(_resolve_ref(root, ref), title, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(combinator)
        if isinstance(branches, list) and branches:
            non_null = [
                b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")
            ]
            return schema_value((non_null or branches)[0], title, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: schema_value(sub, title, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [
            schema_value(schema.get("items") or {}, title, root, depth + 1) for _ in range(count)
        ]
    if kind == "string":
        return _string_value(schema, title)
    if kind in ("integer", "number"):
        minimum = schema.get("minimum", schema.get("exclusiveMinimum"))
        value: int | float = 0
        if isinstance(minimum, int | float) and minimum > 0:
            value = minimum + (1 if "exclusiveMinimum" in schema else 0)
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return None


def _resolve_ref(root: Any, ref: str) -> Any:
    if not ref.startswith("#/"):
        return {}
    node = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node


_STRING_FORMATS = {
    "date": "2025-01-31",
    "date-time": "2025-01-31T00:00:00Z",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string_value(schema: dict[str, Any], title: str) -> str:
    value = _STRING_FORMATS.get(schema.get("format", ""), title)
    max_length = schema.get("maxLength")
    min_length = schema.get("minLength")
    if isinstance(max_length, int):
        value = value[:max_length]
    if isinstance(min_length, int) and len(value) < min_length:
        value = value.ljust(min_length, ".")
    return value


def json_title(user_text: str) -> str:
    return " ".join(user_text.split()[:5]) or "Untitled"


# --- demo tool rules ---------------------------------------------------------------

_ARITHMETIC = re.compile(
    r"(?:what\s+is|what's|calculate|compute|evaluate)\s+(?P<expr>[-+*/×÷^%().\d\s]*\d[-+*/×÷^%().\d\s]*)",
    re.IGNORECASE,
)
_OPERATOR = re.compile(r"[-+*/×÷^%]")
_CONVERT = re.compile(
    r"convert\s+(?P<value>-?\d+(?:\.\d+)?)\s*(?P<from_unit>[^\s\d]+)\s+(?:to|into|in)\s+(?P<to_unit>[^\s?!,;]+)",
    re.IGNORECASE,
)


def demo_tool_call(user_text: str, tool_names: list[str]) -> tuple[str, dict[str, Any]] | None:
    """Apply the demo rules from the module docstring; None when nothing applies."""
    convert_tool = _first_tool(tool_names, ("convert",))
    if convert_tool:
        match = _CONVERT.search(user_text)
        if match:
            number = float(match["value"])
            value: int | float = int(number) if number.is_integer() else number
            return convert_tool, {
                "value": value,
                "from_unit": match["from_unit"],
                "to_unit": match["to_unit"].rstrip("."),
            }
    calc_tool = _first_tool(tool_names, ("calc", "arith"))
    if calc_tool:
        expression = _arithmetic_expression(user_text)
        if expression:
            return calc_tool, {"expression": expression}
    return None


def _first_tool(tool_names: list[str], needles: tuple[str, ...]) -> str | None:
    for name in tool_names:
        if any(needle in name.lower() for needle in needles):
            return name
    return None


def _arithmetic_expression(text: str) -> str | None:
    for match in _ARITHMETIC.finditer(text):
        expression = match["expr"].strip().rstrip(".")
        if _OPERATOR.search(expression):
            return expression
    lowered = text.lower()
    if "calculate" in lowered:
        rest = text[lowered.index("calculate") + len("calculate") :].strip(" :?!.")
        return rest or text.strip()
    return None
