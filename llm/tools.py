"""Built-in tools the model may call: small, exact, side-effect free and bounded.

A tool runs inside a worker thread that also streams other people's answers, and
CPython's big-integer arithmetic holds the GIL: one ``((9**1000)**1000)**1000`` would
freeze every answer in the process for hours, and no thread can be interrupted from
outside. So every tool refuses work *before* doing it: the calculator bounds the input's
length, its syntax tree's size and depth, and the bit size of every number it would build
(estimating ``a**b`` from the operands instead of computing it), and checks a CPU-time
budget between steps as a last resort. A refusal is an ordinary tool result the model
reads and explains to the user; :func:`run_tool` never raises.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import (
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from fractions import Fraction
from typing import Any

logger = logging.getLogger(__name__)

MAX_EXPRESSION_CHARS = 500
# The JSON the model sends for one call; far above any honest calculate/convert call.
MAX_ARGUMENT_CHARS = 10_000
# No operand or result may be wider than this (about 3,000 decimal digits). Each step then
# works on numbers of at most twice this size, which takes well under a millisecond.
MAX_BITS = 10_000
MAX_NODES = 256
MAX_DEPTH = 100
# Cooperative: checked between steps (each step is bounded above), never by killing a thread.
MAX_CPU_SECONDS = 1.0
MAX_UNIT_CHARS = 16
MAX_VALUE_CHARS = 60
# convert_units takes quantities from 1e-30 to 1e30 (adjusted exponents), plus zero.
MAX_VALUE_EXPONENT = 30

TOO_LARGE = (
    f"The calculator refuses numbers over {MAX_BITS:,} bits (about 3,000 digits); "
    "this one would be larger. Tell the user the exact value is too large to compute here "
    "(an estimate with logarithms is possible)."
)
TOO_SLOW = (
    f"The calculation would take over {MAX_CPU_SECONDS:g} s of CPU and was stopped. "
    "Tell the user it is too expensive to compute here."
)
TOO_COMPLEX = (
    f"The expression is too complex (at most {MAX_NODES} numbers and operators, nested at "
    f"most {MAX_DEPTH} deep). Split it into smaller calculations."
)


class ToolError(Exception):
    """A refusal the model can read: the message becomes the tool's result."""


@dataclass
class Meter:
    """The work one evaluation did: what the bounds promise, made countable for tests."""

    nodes: int = 0
    largest_bits: int = 0


_BINARY: dict[type[ast.operator], Callable[[Fraction, Fraction], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Fraction], Fraction]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_ONLY_ARITHMETIC = "Only numbers, + - * / // % ** and parentheses are allowed."


def _bits(value: Fraction) -> int:
    return max(abs(value.numerator).bit_length(), value.denominator.bit_length())


def _check_shape(tree: ast.Expression) -> None:
    """Refuse a tree over the node or depth bound, without recursion (it may be deep)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            raise ToolError(TOO_COMPLEX)
        if isinstance(node, ast.BinOp):
            stack.append((node.left, depth + 1))
            stack.append((node.right, depth + 1))
        elif isinstance(node, ast.UnaryOp):
            stack.append((node.operand, depth + 1))


class _Evaluator:
    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.deadline = time.thread_time() + MAX_CPU_SECONDS

    def _checked(self, value: Fraction) -> Fraction:
        bits = _bits(value)
        self.meter.largest_bits = max(self.meter.largest_bits, bits)
        if bits > MAX_BITS:
            raise ToolError(TOO_LARGE)
        return value

    def evaluate(self, node: ast.AST) -> Fraction:
        self.meter.nodes += 1
        if self.meter.nodes > MAX_NODES:  # _check_shape already refused such trees
            raise ToolError(TOO_COMPLEX)
        if time.thread_time() > self.deadline:
            raise ToolError(TOO_SLOW)
        if isinstance(node, ast.Constant):
            return self._constant(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self.evaluate(node.operand))
        if isinstance(node, ast.BinOp):
            left, right = self.evaluate(node.left), self.evaluate(node.right)
            if isinstance(node.op, ast.Pow):
                return self._checked(self._power(left, right))
            if type(node.op) in _BINARY:
                if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
                    raise ToolError("Division by zero.")
                # Both operands are within MAX_BITS, so this step is cheap whatever it is.
                return self._checked(Fraction(_BINARY[type(node.op)](left, right)))
        raise ToolError(_ONLY_ARITHMETIC)

    def _constant(self, value: object) -> Fraction:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ToolError(_ONLY_ARITHMETIC)
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError(TOO_LARGE)  # a literal such as 1e999 reads as infinity
        if isinstance(value, int) and value.bit_length() > MAX_BITS:
            raise ToolError(TOO_LARGE)
        # Through the decimal text: 0.1 means one tenth, not the nearest binary double.
        return self._checked(Fraction(Decimal(str(value))))

    def _power(self, base: Fraction, exponent: Fraction) -> Fraction:
        if exponent.denominator != 1:
            raise ToolError("Exponents must be whole numbers (roots are not supported).")
        power = exponent.numerator
        if base == 0:
            if power < 0:
                raise ToolError("Division by zero.")
            return Fraction(0 if power else 1)
        if abs(base) == 1:
            return base if power % 2 else abs(base)
        # Refuse before computing: |n| ** e has at least (bits(n) - 1) * e + 1 bits, and at
        # most bits(n) * e, so anything that passes is at most twice MAX_BITS wide.
        if (_bits(base) - 1) * abs(power) + 1 > MAX_BITS:
            raise ToolError(TOO_LARGE)
        return base**power


def evaluate(expression: str, *, meter: Meter | None = None) -> Fraction:
    """The exact value of an arithmetic expression, or :class:`ToolError`.

    Never evaluates names, calls or attributes; visits at most ``MAX_NODES`` nodes and
    never builds a number wider than ``2 * MAX_BITS + 1`` bits (recorded on ``meter``).
    """
    if not isinstance(expression, str) or len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(
            f"The expression must be a string of at most {MAX_EXPRESSION_CHARS} characters."
        )
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ToolError("The expression is not valid arithmetic.") from exc
    except (RecursionError, MemoryError) as exc:
        raise ToolError(TOO_COMPLEX) from exc
    _check_shape(tree)
    return _Evaluator(meter or Meter()).evaluate(tree.body)


def _decimal_text(value: Fraction) -> str:
    """Twelve significant digits, also for values beyond a float's range."""
    try:
        approximate = float(value)
    except OverflowError:
        approximate = math.nan
    if math.isfinite(approximate) and (approximate != 0 or value == 0):
        return f"{approximate:.12g}"
    with localcontext(Context(prec=12, Emax=10**9, Emin=-(10**9))):
        decimal = Decimal(value.numerator) / Decimal(value.denominator)
    return f"{decimal.normalize():g}"


def calculate(expression: str) -> dict[str, Any]:
    """Exact rational arithmetic within MAX_BITS; refusals are :class:`ToolError`."""
    value = evaluate(expression)
    exact = str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    return {"expression": expression, "exact": exact, "decimal": _decimal_text(value)}


# Factors to one SI base unit per dimension; temperatures are handled separately.
_UNITS: dict[str, tuple[str, Decimal]] = {
    "m": ("length", Decimal(1)), "km": ("length", Decimal(1000)), "cm": ("length", Decimal("0.01")),
    "mm": ("length", Decimal("0.001")), "mi": ("length", Decimal("1609.344")),
    "yd": ("length", Decimal("0.9144")), "ft": ("length", Decimal("0.3048")),
    "in": ("length", Decimal("0.0254")), "nmi": ("length", Decimal(1852)),
    "kg": ("mass", Decimal(1)), "g": ("mass", Decimal("0.001")), "mg": ("mass", Decimal("0.000001")),
    "lb": ("mass", Decimal("0.45359237")), "oz": ("mass", Decimal("0.028349523125")),
    "l": ("volume", Decimal(1)), "ml": ("volume", Decimal("0.001")),
    "gal": ("volume", Decimal("3.785411784")), "m3": ("volume", Decimal(1000)),
    "s": ("time", Decimal(1)), "min": ("time", Decimal(60)), "h": ("time", Decimal(3600)),
    "day": ("time", Decimal(86400)),
    "j": ("energy", Decimal(1)), "kj": ("energy", Decimal(1000)), "cal": ("energy", Decimal("4.184")),
    "kcal": ("energy", Decimal(4184)), "kwh": ("energy", Decimal(3600000)),
    "ev": ("energy", Decimal("1.602176634E-19")),
    "pa": ("pressure", Decimal(1)), "kpa": ("pressure", Decimal(1000)),
    "bar": ("pressure", Decimal(100000)), "atm": ("pressure", Decimal(101325)),
    "psi": ("pressure", Decimal("6894.757293168")),
}
_TEMPERATURES = {"c", "f", "k"}
# Our own context, whatever a caller's thread set: traps turn into ToolError below.
_CONVERSION_CONTEXT = Context(prec=28, traps=[InvalidOperation, DivisionByZero, Overflow])


def _to_kelvin(value: Decimal, unit: str) -> Decimal:
    if unit == "c":
        return value + Decimal("273.15")
    if unit == "f":
        return (value - 32) * 5 / 9 + Decimal("273.15")
    return value


def _from_kelvin(value: Decimal, unit: str) -> Decimal:
    if unit == "c":
        return value - Decimal("273.15")
    if unit == "f":
        return (value - Decimal("273.15")) * 9 / 5 + 32
    return value


def _amount(value: object) -> Decimal:
    bad = ToolError(
        f"value must be a number between 1e-{MAX_VALUE_EXPONENT} and 1e{MAX_VALUE_EXPONENT} "
        "in size (or 0)."
    )
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise bad
    if isinstance(value, int) and value.bit_length() > 128:
        raise bad
    text = str(value).strip()
    if len(text) > MAX_VALUE_CHARS:
        raise bad
    try:
        amount = Decimal(text)
    except (InvalidOperation, ValueError) as exc:
        raise bad from exc
    # Decimal("1e999999999") is exact and cheap; multiplying or printing it is not.
    if not amount.is_finite() or (amount and abs(amount.adjusted()) > MAX_VALUE_EXPONENT):
        raise bad
    return amount


def _unit(unit: object) -> str:
    if not isinstance(unit, str) or len(unit) > MAX_UNIT_CHARS:
        return ""
    return unit.strip().lower()


def convert_units(value: Any, from_unit: str, to_unit: str) -> dict[str, Any]:
    amount = _amount(value)
    source, target = _unit(from_unit), _unit(to_unit)
    try:
        with localcontext(_CONVERSION_CONTEXT):
            if source in _TEMPERATURES and target in _TEMPERATURES:
                result = _from_kelvin(_to_kelvin(amount, source), target)
            elif source in _UNITS and target in _UNITS:
                (source_dim, source_factor), (target_dim, target_factor) = (
                    _UNITS[source], _UNITS[target]
                )
                if source_dim != target_dim:
                    raise ToolError(
                        f"Cannot convert {source_dim} ({source}) to {target_dim} ({target})."
                    )
                result = amount * source_factor / target_factor
            else:
                known = ", ".join(sorted(_UNITS) + sorted(_TEMPERATURES))
                raise ToolError(f"Unknown unit. Known units: {known}.")
            if not result:
                text = "0"
            elif abs(result) >= Decimal("1e-6"):
                text = f"{result.normalize():f}"
            else:
                text = f"{result:.6E}"
    except DecimalException as exc:
        raise ToolError("The conversion is out of range.") from exc
    return {"value": str(amount), "from_unit": from_unit, "to_unit": to_unit, "result": text}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[..., dict[str, Any]]

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in [
        Tool(
            name="calculate",
            description="Evaluate an arithmetic expression exactly (rationals, no rounding). "
            f"Numbers over {MAX_BITS:,} bits (about 3,000 digits) are refused.",
            parameters={
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "e.g. 12*(3+4)/5"}},
                "required": ["expression"],
                "additionalProperties": False,
            },
            run=calculate,
        ),
        Tool(
            name="convert_units",
            description="Convert a quantity between units of length, mass, volume, time, "
            "energy, pressure or temperature (C, F, K).",
            parameters={
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "from_unit": {"type": "string"},
                    "to_unit": {"type": "string"},
                },
                "required": ["value", "from_unit", "to_unit"],
                "additionalProperties": False,
            },
            run=convert_units,
        ),
    ]
}


def tool_schemas() -> list[dict[str, Any]]:
    return [tool.schema() for tool in TOOLS.values()]


def _parse_arguments(tool: Tool, arguments: object) -> dict[str, Any]:
    if arguments is None or arguments == "":
        arguments = "{}"
    if isinstance(arguments, str):
        if len(arguments) > MAX_ARGUMENT_CHARS:
            raise ToolError(f"Arguments are longer than {MAX_ARGUMENT_CHARS:,} characters.")
        try:
            parsed = json.loads(arguments)
        except RecursionError as exc:
            raise ToolError("Arguments are nested too deeply.") from exc
        except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
            raise ToolError("Arguments are not valid JSON.") from exc
    else:
        parsed = arguments
    if not isinstance(parsed, dict):
        raise ToolError("Arguments must be a JSON object.")
    allowed = set(tool.parameters["properties"])
    unknown = sorted(str(key)[:40] for key in parsed if key not in allowed)
    missing = sorted(set(tool.parameters["required"]) - set(parsed))
    if unknown or missing:
        raise ToolError(
            f"Wrong arguments for {tool.name}: it takes {', '.join(sorted(allowed))}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(unknown)}" if unknown else "")
            + "."
        )
    return parsed


def run_tool(name: Any, arguments: Any) -> tuple[dict[str, Any], bool]:
    """Run a tool call from the model; returns (result, ok). Never raises.

    ``name`` and ``arguments`` come from the model's stream unchecked: any type, any size.
    """
    try:
        tool = TOOLS.get(name) if isinstance(name, str) else None
        if tool is None:
            shown = repr(name[:64]) if isinstance(name, str) else "without a name"
            raise ToolError(f"Unknown tool {shown}. Available tools: {', '.join(TOOLS)}.")
        return tool.run(**_parse_arguments(tool, arguments)), True
    except ToolError as exc:
        return {"error": str(exc)}, False
    except Exception:
        # A bug in a tool must not fail the answer; the model hears that the call failed.
        logger.exception("Tool call %.64r failed", name)
        return {"error": "The tool failed on these arguments. Try a different approach."}, False
