"""Built-in tools the model may call: small, exact and side-effect free."""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000


class ToolError(Exception):
    pass


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(
        node.value, bool
    ):
        return Fraction(Decimal(str(node.value)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (right.denominator != 1 or abs(right) > MAX_EXPONENT):
            raise ToolError("Exponents must be whole numbers up to 1000.")
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise ToolError("Division by zero.")
        return Fraction(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return Fraction(_UNARY[type(node.op)](_evaluate(node.operand)))
    raise ToolError("Only numbers, + - * / // % ** and parentheses are allowed.")


def calculate(expression: str) -> dict[str, Any]:
    """Exact rational arithmetic; never evaluates names, calls or attributes."""
    if not isinstance(expression, str) or len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError("The expression must be a string of at most 500 characters.")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ToolError("The expression is not valid arithmetic.") from exc
    value = _evaluate(tree)
    exact = str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    return {"expression": expression, "exact": exact, "decimal": f"{float(value):.12g}"}


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


def convert_units(value: Any, from_unit: str, to_unit: str) -> dict[str, Any]:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ToolError("value must be a number.") from exc
    source, target = str(from_unit).strip().lower(), str(to_unit).strip().lower()
    if source in _TEMPERATURES and target in _TEMPERATURES:
        result = _from_kelvin(_to_kelvin(amount, source), target)
    elif source in _UNITS and target in _UNITS:
        (source_dim, source_factor), (target_dim, target_factor) = _UNITS[source], _UNITS[target]
        if source_dim != target_dim:
            raise ToolError(f"Cannot convert {source_dim} ({from_unit}) to {target_dim} ({to_unit}).")
        result = amount * source_factor / target_factor
    else:
        known = ", ".join(sorted(_UNITS) + sorted(_TEMPERATURES))
        raise ToolError(f"Unknown unit. Known units: {known}.")
    return {"value": str(amount), "from_unit": from_unit, "to_unit": to_unit,
            "result": f"{result.normalize():f}" if abs(result) >= Decimal("1e-6") else f"{result:.6E}"}


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
            description="Evaluate an arithmetic expression exactly (rationals, no rounding).",
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


def run_tool(name: str, arguments: str) -> tuple[dict[str, Any], bool]:
    """Run a tool call from the model; returns (result, ok). Never raises."""
    tool = TOOLS.get(name)
    if tool is None:
        return {"error": f"Unknown tool {name!r}."}, False
    try:
        parsed = json.loads(arguments or "{}")
        if not isinstance(parsed, dict):
            raise ToolError("Arguments must be a JSON object.")
        return tool.run(**parsed), True
    except json.JSONDecodeError:
        return {"error": "Arguments are not valid JSON."}, False
    except TypeError:
        return {"error": "Wrong or missing arguments."}, False
    except ToolError as exc:
        return {"error": str(exc)}, False
