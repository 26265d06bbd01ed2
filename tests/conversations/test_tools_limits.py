"""Tool calls are bounded: hostile arguments get a readable refusal, never a pinned thread.

A tool runs in a worker thread that streams other answers too, and big-integer arithmetic
holds the GIL. The bounds are asserted as counts (nodes visited, widest number built), not
timings; the one timing here is a generous wall-clock ceiling per call.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import pytest

from llm.tools import (
    MAX_BITS,
    MAX_NODES,
    Meter,
    ToolError,
    calculate,
    convert_units,
    evaluate,
    run_tool,
)

# No test here touches the database, but the session fixtures in tests/conftest.py
# (unique message ids) need one set up even when this module runs alone.
pytestmark = pytest.mark.django_db

# Far above what any refusal takes (microseconds); the bug guarded against is hours.
CEILING_SECONDS = 0.5
TOWER = "((9**1000)**1000)**1000"


def calc(expression: Any) -> str:
    return json.dumps({"expression": expression})


HOSTILE_CALLS: list[tuple[str, Any, Any, str]] = [
    # (case, tool name, raw arguments, words the refusal must contain)
    ("an exponent tower", "calculate", calc(TOWER), "10,000 bits"),
    ("a right-associative tower", "calculate", calc("9**9**9**9"), "10,000 bits"),
    ("a caret tower", "calculate", calc("2^2^2^2^2^2"), "10,000 bits"),
    ("one power just over the bound", "calculate", calc("2**10000"), "10,000 bits"),
    ("a huge exponent on a fraction", "calculate", calc("(1/3)**100000000"), "10,000 bits"),
    ("a huge negative exponent", "calculate", calc("7**-99999999999"), "10,000 bits"),
    ("an exponent computed to be huge", "calculate", calc("2**(2**(2**(2**(2**2))))"),
     "10,000 bits"),
    ("a product of two allowed numbers", "calculate", calc("(2**9999)*(3**6000)"),
     "10,000 bits"),
    ("repeated multiplication", "calculate", calc("*".join(["(9**3000)"] * 20)), "10,000 bits"),
    ("repeated squaring by division", "calculate", calc("(2**6000)/(3**-6000)"), "10,000 bits"),
    ("an infinite float literal", "calculate", calc("1e999999999"), "10,000 bits"),
    ("a float overflow", "calculate", calc("1e308**40"), "10,000 bits"),
    ("division by zero", "calculate", calc("1/0"), "Division by zero"),
    ("floor division by zero", "calculate", calc("7//(3-3)"), "Division by zero"),
    ("modulo zero", "calculate", calc("7%0"), "Division by zero"),
    ("zero to a negative power", "calculate", calc("0**-1"), "Division by zero"),
    ("a root", "calculate", calc("2**0.5"), "whole numbers"),
    ("a shift", "calculate", calc("1<<100000000"), "Only numbers"),
    ("a factorial call", "calculate", calc("factorial(100000)"), "Only numbers"),
    ("a name", "calculate", calc("__import__('os').system('true')"), "Only numbers"),
    ("an attribute", "calculate", calc("(1).__class__"), "Only numbers"),
    ("a complex literal", "calculate", calc("1j**2"), "Only numbers"),
    ("a boolean", "calculate", calc("True+1"), "Only numbers"),
    ("a string literal", "calculate", calc("'9'*10**9"), "Only numbers"),
    ("a comparison", "calculate", calc("1<2"), "Only numbers"),
    ("deep unary nesting", "calculate", calc("-" * 499 + "1"), "too complex"),
    ("deep nesting", "calculate", calc("(1+" * 120 + "1" + ")" * 120), "too complex"),
    ("deep parentheses", "calculate", calc("(" * 240 + "1" + ")" * 240), "not valid arithmetic"),
    ("too many nodes", "calculate", calc("+".join(["1"] * 250)), "too complex"),
    ("a long expression", "calculate", calc("1" * 501), "at most 500 characters"),
    ("a null byte", "calculate", calc("1\x002"), "not valid arithmetic"),
    ("not arithmetic", "calculate", calc("2 +* 3"), "not valid arithmetic"),
    ("an expression that is a number", "calculate", calc(12), "must be a string"),
    ("an expression that is a list", "calculate", calc(["1+1"]), "must be a string"),
    ("no expression", "calculate", "{}", "missing expression"),
    ("an extra argument", "calculate", json.dumps({"expression": "1", "meter": 1}),
     "unexpected meter"),
    ("bad JSON", "calculate", '{"expression": "1+', "not valid JSON"),
    ("a JSON array", "calculate", "[1, 2]", "JSON object"),
    ("JSON null", "calculate", "null", "JSON object"),
    ("arguments that are not text", "calculate", 42, "JSON object"),
    ("deeply nested JSON", "calculate", "[" * 5000 + "]" * 5000, "nested too deeply"),
    ("huge arguments", "calculate", calc("9" * 1_000_000), "longer than 10,000"),
    ("an integer too long for JSON", "calculate", '{"expression": ' + "9" * 5000 + "}",
     "not valid JSON"),
    ("an unknown tool", "shell", calc("1"), "Unknown tool 'shell'"),
    ("a missing tool name", None, calc("1"), "Unknown tool without a name"),
    ("a tool name that is a list", ["calculate"], calc("1"), "Unknown tool without a name"),
    ("a huge tool name", "x" * 1_000_000, calc("1"), "Unknown tool"),
    ("a Decimal exponent past the context", "convert_units",
     json.dumps({"value": "1e999999999", "from_unit": "km", "to_unit": "m"}), "1e30"),
    ("a tiny Decimal exponent", "convert_units",
     json.dumps({"value": "1e-999999999", "from_unit": "ev", "to_unit": "kwh"}), "1e30"),
    ("an infinite JSON number", "convert_units",
     '{"value": 1e999999999, "from_unit": "km", "to_unit": "m"}', "1e30"),
    ("NaN", "convert_units", json.dumps({"value": "NaN", "from_unit": "km", "to_unit": "m"}),
     "1e30"),
    ("signalling NaN", "convert_units",
     json.dumps({"value": "sNaN", "from_unit": "km", "to_unit": "m"}), "1e30"),
    ("a value that is a list", "convert_units",
     json.dumps({"value": [1], "from_unit": "km", "to_unit": "m"}), "must be a number"),
    ("a value that is a boolean", "convert_units",
     json.dumps({"value": True, "from_unit": "km", "to_unit": "m"}), "must be a number"),
    ("a long value", "convert_units",
     json.dumps({"value": "1" * 5000, "from_unit": "km", "to_unit": "m"}), "must be a number"),
    ("a huge unit", "convert_units",
     json.dumps({"value": 1, "from_unit": "km" * 4000, "to_unit": "m"}), "Unknown unit"),
    ("a unit that is a number", "convert_units",
     json.dumps({"value": 1, "from_unit": 3, "to_unit": "m"}), "Unknown unit"),
    ("mismatched dimensions", "convert_units",
     json.dumps({"value": 1, "from_unit": "km", "to_unit": "kg"}), "Cannot convert length"),
]


@pytest.mark.parametrize(("name", "arguments", "words"),
                         [case[1:] for case in HOSTILE_CALLS],
                         ids=[case[0] for case in HOSTILE_CALLS])
def test_a_hostile_call_gets_a_readable_refusal_at_once(name: Any, arguments: Any,
                                                        words: str) -> None:
    started = time.monotonic()
    result, ok = run_tool(name, arguments)
    elapsed = time.monotonic() - started

    assert ok is False
    assert set(result) == {"error"}
    assert words in result["error"]
    assert len(result["error"]) < 500
    json.dumps(result)  # what the model is sent back
    assert elapsed < CEILING_SECONDS


CALCULATOR_INPUTS = [
    args for _, name, args, _ in HOSTILE_CALLS
    if name == "calculate" and isinstance(args, str) and len(args) < 2000
] + [calc("2**9999"), calc("(1/3)**6000"), calc("+".join(["(3**6000/7**3500)"] * 25))]


@pytest.mark.parametrize("arguments", CALCULATOR_INPUTS)
def test_the_evaluator_visits_at_most_max_nodes_and_builds_no_number_twice_the_bound(
    arguments: str,
) -> None:
    try:
        expression = json.loads(arguments).get("expression")
    except (ValueError, AttributeError):
        return  # refused before the evaluator runs
    meter = Meter()
    with contextlib.suppress(ToolError):
        evaluate(expression, meter=meter)

    assert meter.nodes <= MAX_NODES
    assert meter.largest_bits <= 2 * MAX_BITS + 1


def test_an_exponent_tower_is_refused_before_its_first_oversized_power() -> None:
    meter = Meter()

    with pytest.raises(ToolError, match="10,000 bits"):
        evaluate(TOWER, meter=meter)

    # 9**1000 (3,170 bits) is built; (9**1000)**1000 is refused from the operand sizes.
    assert meter.largest_bits == (9**1000).bit_length()


def test_numbers_up_to_the_bound_are_still_exact() -> None:
    assert calculate("2**9999")["exact"] == str(2**9999)
    assert calculate("2**9999")["decimal"] == "9.9753155844e+3009"
    assert calculate("(1/3)**6000")["exact"] == f"1/{3**6000}"
    assert calculate("(1/3)**6000")["decimal"] == "1.87271496951e-2863"
    assert calculate("1e308*1e308")["decimal"] == "1e+616"
    assert calculate("12*(3+4)/5") == {"expression": "12*(3+4)/5", "exact": "84/5",
                                       "decimal": "16.8"}
    assert calculate("(-1)**99999999999999")["exact"] == "-1"
    assert calculate("0**0")["exact"] == "1"
    assert calculate("2^10")["exact"] == "1024"


def test_unit_conversions_in_range_still_work() -> None:
    assert convert_units(5, "km", "mi")["result"] == "3.106855961186669848087170922"
    assert convert_units(100, "C", "F")["result"] == "212"
    assert convert_units("1e30", "kwh", "ev")["result"].startswith("2246943266805874538799446753")
    assert convert_units(0, "kg", "lb")["result"] == "0"


def test_run_tool_reports_a_bug_in_a_tool_as_a_failed_call(monkeypatch: Any) -> None:
    from llm import tools

    def broken(expression: str) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setitem(tools.TOOLS, "calculate",
                        tools.Tool("calculate", "", tools.TOOLS["calculate"].parameters, broken))

    assert run_tool("calculate", calc("1+1")) == (
        {"error": "The tool failed on these arguments. Try a different approach."}, False)


def test_a_thread_keeps_running_while_another_thread_feeds_the_calculator_hostile_input(
) -> None:
    """The GIL is what froze every answer: a ticking thread must keep ticking."""
    stop = threading.Event()
    ticks: list[float] = []

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.005)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        for _ in range(20):
            for _, name, arguments, _ in HOSTILE_CALLS:
                run_tool(name, arguments)
    finally:
        stop.set()
        ticker.join()

    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) > 2
    assert max(gaps) < 1.0
