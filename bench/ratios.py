"""The product against the floor measured in the same run: ratios at each N.

The floor (``bench/reference.py``, mode ``floor``) is the least server with a Celery queue
and PostgreSQL storage, run on the same cores with the same tabs and emulator once the
product's processes have stopped. What the machine, the emulator and the tabs cost moves
from run to run and from machine to machine; it moves the floor's figures as much as the
product's, so the budgets of issue 23 are stated against the floor: product ÷ floor for
latencies and CPU, product − floor for the first token at N = 50.

Pure functions over the rows of ``bench.sustained.analyse`` (product rows, and reference
rows, which also carry ``system`` and ``processes``).
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]

FLOOR = "floor"
PRODUCT_ROLES = ("web", "worker", "side")  # each role's processes together (side: titles)
DATABASE = "postgres (bench db)"

# (key, the row's latency summary, its percentile)
LATENCIES = (
    ("token_p50", "token_added_ms", "p50"),
    ("token_p99", "token_added_ms", "p99"),
    ("ttft_p50", "ttft_added_ms", "p50"),
    ("ttft_p99", "ttft_added_ms", "p99"),
)


def ratio(product: float | None, floor: float | None) -> float | None:
    """product ÷ floor; None when either is missing or the floor is not above zero."""
    if product is None or floor is None or floor <= 0:
        return None
    return product / floor


def serving_processes(row: Row) -> list[str]:
    """The processes that serve the tabs: the product's web, worker and side-worker
    roles, or a reference server's own processes (its server and, for the floor, its
    worker)."""
    if "processes" in row:
        return list(row["processes"])
    return list(PRODUCT_ROLES)


def cpu_ms_per_turn(row: Row, tokens_per_answer: int) -> float | None:
    """CPU of the serving processes and of the bench database over the window ÷ the turns
    delivered in it (delivered tokens ÷ tokens per answer), in ms.

    Per turn with its stream, title calls and everything else the window held: the one
    measure taken alike for the product and the floor at every N."""
    delivered = row["tokens"]["delivered"]
    if not delivered or tokens_per_answer < 1:
        return None
    cpu = row["cpu_s"]
    seconds = sum(cpu.get(name, 0.0) for name in serving_processes(row)) + cpu.get(DATABASE, 0.0)
    return 1000 * seconds / (delivered / tokens_per_answer)


def _pair(product: float | None, floor: float | None) -> dict[str, float | None]:
    return {
        "product": product,
        "floor": floor,
        "ratio": ratio(product, floor),
        "excess": None if product is None or floor is None else product - floor,
    }


def compare(product: Row, floor: Row, tokens_per_answer: int) -> dict[str, dict[str, float | None]]:
    """Each figure of the budgets for the product and the floor at one N, with
    product ÷ floor (``ratio``) and product − floor (``excess``)."""
    result = {key: _pair(product[summary].get(pct), floor[summary].get(pct))
              for key, summary, pct in LATENCIES}
    result["cpu_per_turn"] = _pair(cpu_ms_per_turn(product, tokens_per_answer),
                                   cpu_ms_per_turn(floor, tokens_per_answer))
    return result


def attach(sustained: list[Row], reference: list[Row], tokens_per_answer: int) -> None:
    """Give every row its CPU per turn and every product row its comparison with the
    floor at the same N (``against_floor``; None when the floor did not run at that N)."""
    floors = {row["streams"]: row for row in reference if row.get("system") == FLOOR}
    for row in reference:
        row["cpu_ms_per_turn"] = cpu_ms_per_turn(row, tokens_per_answer)
    for row in sustained:
        row["cpu_ms_per_turn"] = cpu_ms_per_turn(row, tokens_per_answer)
        floor = floors.get(row["streams"])
        row["against_floor"] = None if floor is None else compare(row, floor, tokens_per_answer)
