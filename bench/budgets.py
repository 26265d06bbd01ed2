"""The streaming budgets of issue 10, as data: which table cell each one judges, at
which N, against which limit. The report marks the cells from this list and lists the
verdicts under the table, so a budget is stated once."""

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
    column: str  # the table column whose cell shows the measured value
    streams: int | None  # the N it is judged at; None: every N
    measured: Callable[[Row], float | None]
    limit: float
    at_least: bool = False  # True: the measured value must reach the limit

    def applies(self, row: Row) -> bool:
        return self.streams is None or row["streams"] == self.streams

    def passed(self, row: Row) -> bool:
        """A missing measurement (no tokens at all) fails: nothing was shown to work."""
        value = self.measured(row)
        if value is None:
            return False
        return value >= self.limit if self.at_least else value <= self.limit


BUDGETS = [
    Budget("per-token added latency p99 ≤ 100 ms", "p99 ≤ 100", "token", 200,
           lambda r: r["token_added_ms"]["p99"], 100),
    Budget("delivered ≥ 95 % of offered tokens/s", "≥ 95 %", "tokens", 200,
           lambda r: r["tokens"]["ratio"], 0.95, at_least=True),
    Budget("no token lost, duplicated or out of order", "none", "correctness", 200,
           _correctness_faults, 0),
    Budget("every turn finished", "all", "turns", 200, _turns_not_finished, 0),
    Budget("added time to first token p50 ≤ 25 ms", "p50 ≤ 25", "ttft", 50,
           lambda r: r["ttft_added_ms"]["p50"], 25),
    Budget("added time to first token p99 ≤ 150 ms", "p99 ≤ 150", "ttft", 50,
           lambda r: r["ttft_added_ms"]["p99"], 150),
    Budget("at most 20 frames per answer per second (every answer)", "max ≤ 20", "frames", None,
           lambda r: r["frames_per_answer_s"]["max"], 20),
    Budget("CPU per streamed token ≤ 60 µs, web + worker (turn cost taken out)", "≤ 60", "split", 200,
           lambda r: _split(r, "token_us"), 60),
    Budget("CPU per turn outside the stream ≤ 15 ms, web + worker", "≤ 15", "split", 200,
           lambda r: _split(r, "turn_ms"), 15),
]


def _split(row: Row, key: str) -> float | None:
    """From bench.turn_cost.split; None (a failed check) when the per-turn step did not run."""
    split = row.get("cpu_split")
    return None if split is None else split[key].get("web + worker")


def verdicts(rows: list[Row]) -> list[tuple[Budget, Row, bool]]:
    """Every (budget, row it applies to, passed)."""
    return [(budget, row, budget.passed(row)) for budget in BUDGETS for row in rows if budget.applies(row)]


def unjudged(rows: list[Row]) -> list[Budget]:
    """Budgets whose N was not part of the run."""
    return [budget for budget in BUDGETS if not any(budget.applies(row) for row in rows)]
