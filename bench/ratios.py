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
HOP = "hop"
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
    roles, or a reference server's own processes (its server and, for the floor and
    the hop, its worker)."""
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


def _pair(product: float | None, other: float | None, name: str) -> dict[str, float | None]:
    return {
        "product": product,
        name: other,
        "ratio": ratio(product, other),
        "excess": None if product is None or other is None else product - other,
    }


def compare(product: Row, reference: Row, tokens_per_answer: int, *,
            name: str = FLOOR) -> dict[str, dict[str, float | None]]:
    """Each figure of the budgets for the product and a reference server at one N (the
    reference's figure under its ``name``: ``floor``, ``hop``), with product ÷ reference
    (``ratio``) and product − reference (``excess``)."""
    result = {key: _pair(product[summary].get(pct), reference[summary].get(pct), name)
              for key, summary, pct in LATENCIES}
    result["cpu_per_turn"] = _pair(cpu_ms_per_turn(product, tokens_per_answer),
                                   cpu_ms_per_turn(reference, tokens_per_answer), name)
    return result


def hop_over_floor(row: Row) -> dict[str, float | None]:
    """hop ÷ floor at a product row's N for CPU per turn and per-token p99 (each None
    unless both ran): what DESIGN's hop costs over the floor, the product left out."""
    against_floor, against_hop = row.get("against_floor"), row.get("against_hop")
    return {key: None if against_floor is None or against_hop is None
            else ratio(against_hop[key][HOP], against_floor[key][FLOOR])
            for key in ("cpu_per_turn", "token_p99")}


def attach(sustained: list[Row], reference: list[Row], tokens_per_answer: int) -> None:
    """Give every row its CPU per turn and every product row its comparison with the
    floor at the same N (``against_floor``; None when the floor did not run at that N)
    and, as information, with the hop (``against_hop``, alike)."""
    floors = {row["streams"]: row for row in reference if row.get("system") == FLOOR}
    hops = {row["streams"]: row for row in reference if row.get("system") == HOP}
    for row in reference:
        row["cpu_ms_per_turn"] = cpu_ms_per_turn(row, tokens_per_answer)
    for row in sustained:
        row["cpu_ms_per_turn"] = cpu_ms_per_turn(row, tokens_per_answer)
        floor, hop = floors.get(row["streams"]), hops.get(row["streams"])
        row["against_floor"] = None if floor is None else compare(row, floor, tokens_per_answer)
        row["against_hop"] = None if hop is None else compare(row, hop, tokens_per_answer, name=HOP)
