"""The budgets of issue 23, as data: which table cell each one judges, at which N,
against which limit. The report marks the cells from this list and lists the verdicts
under the tables, so a budget is stated once.

The latency and CPU budgets are stated against the floor measured in the same run
(``bench.ratios``, ``row["against_floor"]``): they are judged only when ``--reference``
ran the floor at that N. The others are absolute and judged at every N.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]  # one step's sustained analysis (bench.sustained.analyse) + "streams"


def _correctness_faults(row: Row) -> float:
    c = row["correctness"]
    return float(c["lost"] + c["duplicated"] + c["out_of_order"])


def _turns_not_finished(row: Row) -> float:
    return float(row["turns"]["started"] - row["turns"]["finished"])


@dataclass(frozen=True)
class Budget:
    name: str
    short: str  # as marked in the table cell
    column: str  # the column (of the sustained table or the floor table) it marks
    streams: tuple[int, ...] | None  # the N it is judged at; None: every N
    measured: Callable[[Row], float | None]
    limit: float
    against_floor: bool = False  # judged on row["against_floor"]: needs the floor at that N

    def applies(self, row: Row) -> bool:
        return self.streams is None or row["streams"] in self.streams

    def judged(self, row: Row) -> bool:
        return not self.against_floor or row.get("against_floor") is not None

    def passed(self, row: Row) -> bool:
        """A missing measurement (no tokens at all) fails: nothing was shown to work."""
        value = self.measured(row)
        if value is None:
            return False
        return value <= self.limit  # every budget here is an upper limit


def _against_floor(key: str, part: str) -> Callable[[Row], float | None]:
    """``part`` ("ratio": product ÷ floor, "excess": product − floor) of one figure."""
    def measured(row: Row) -> float | None:
        comparison = row.get("against_floor")
        return None if comparison is None else comparison[key][part]
    return measured


BUDGETS = [
    Budget("per-token added latency p99 ≤ 2 × the floor's", "≤ 2×", "token_p99", (100, 200),
           _against_floor("token_p99", "ratio"), 2, against_floor=True),
    Budget("added time to first token p50 ≤ the floor's + 15 ms", "≤ floor + 15 ms", "ttft_p50", (50,),
           _against_floor("ttft_p50", "excess"), 15, against_floor=True),
    Budget("CPU per turn, web + worker + PostgreSQL, ≤ 2 × the floor's", "≤ 2×", "cpu_per_turn", None,
           _against_floor("cpu_per_turn", "ratio"), 2, against_floor=True),
    Budget("at most 20 frames per answer per second (every answer)", "max ≤ 20", "frames", None,
           lambda r: r["frames_per_answer_s"]["max"], 20),
    Budget("every turn finished", "all", "turns", None, _turns_not_finished, 0),
    Budget("no token lost, duplicated or out of order", "none", "correctness", None,
           _correctness_faults, 0),
]


def verdicts(rows: list[Row]) -> list[tuple[Budget, Row, bool]]:
    """Every (budget, row it applies to and can be judged on, passed)."""
    return [(budget, row, budget.passed(row)) for budget in BUDGETS for row in rows
            if budget.applies(row) and budget.judged(row)]


def unjudged(rows: list[Row]) -> list[tuple[Budget, str]]:
    """Budgets left unjudged, each with why: its N was not part of the run, or the floor
    was not measured at that N."""
    found = []
    for budget in BUDGETS:
        applicable = [row for row in rows if budget.applies(row)]
        if not applicable:
            wanted = [str(n) for n in budget.streams or ()]
            found.append((budget, f"N = {' and '.join(wanted)} "
                                  f"{'were' if len(wanted) > 1 else 'was'} not part of this run"))
            continue
        missing = [row["streams"] for row in applicable if not budget.judged(row)]
        if missing:
            found.append((budget, "no floor measured at N = " + ", ".join(str(n) for n in missing)
                          + " (run with --reference)"))
    return found
