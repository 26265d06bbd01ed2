"""bench.ratios and bench.budgets: the product against the floor of the same run, the
budgets of issue 23 judged on those ratios, the product against the hop (information),
and the share of new-conversation turns."""

from __future__ import annotations

from typing import Any

import pytest

from bench.budgets import BUDGETS, unjudged, verdicts
from bench.fixtures import new_conversation_turns
from bench.ratios import attach, compare, cpu_ms_per_turn, hop_over_floor, ratio
from bench.sustained_report import floor_table, hop_table, load_model

TOKENS = 300


def _row(streams: int, *, token: tuple[float, float] = (30.0, 80.0), ttft: tuple[float, float] = (20.0, 90.0),
         cpu: dict[str, float] | None = None, delivered: int = 30_000, **extra: Any) -> dict[str, Any]:
    """A sustained row as bench.sustained.analyse gives it (the fields the budgets read)."""
    return {
        "streams": streams,
        "token_added_ms": {"p50": token[0], "p99": token[1]},
        "ttft_added_ms": {"p50": ttft[0], "p99": ttft[1]},
        "tokens": {"delivered": delivered},
        "cpu_s": cpu if cpu is not None else {"web": 2.0, "worker": 3.0, "postgres (bench db)": 1.0,
                                              "emulator": 9.0},
        "frames_per_answer_s": {"max": 17.0},
        "turns": {"started": 100, "finished": 100},
        "correctness": {"lost": 0, "duplicated": 0, "out_of_order": 0},
        **extra,
    }


def _floor(streams: int, **kwargs: Any) -> dict[str, Any]:
    cpu = {"floor-1": 1.0, "floor worker-1": 0.5, "postgres (bench db)": 1.0, "emulator": 9.0}
    return _row(streams, cpu=kwargs.pop("cpu", cpu), system="floor",
                processes=["floor worker-1", "floor-1"], **kwargs)


def _hop(streams: int, **kwargs: Any) -> dict[str, Any]:
    cpu = {"hop-1": 1.5, "hop worker-1": 1.5, "postgres (bench db)": 1.0, "emulator": 9.0}
    return _row(streams, cpu=kwargs.pop("cpu", cpu), system="hop",
                processes=["hop worker-1", "hop-1"], **kwargs)


def _outcome(rows: list[dict[str, Any]]) -> dict[tuple[str, int], bool]:
    return {(budget.name, row["streams"]): passed for budget, row, passed in verdicts(rows)}


def test_a_ratio_needs_both_figures_and_a_floor_above_zero() -> None:
    assert ratio(446.0, 85.0) == pytest.approx(5.247, abs=1e-3)
    assert ratio(None, 85.0) is None and ratio(446.0, None) is None and ratio(1.0, 0.0) is None


def test_cpu_per_turn_counts_the_serving_processes_and_the_database_per_delivered_turn() -> None:
    # 30,000 tokens of 300 = 100 turns; web 2 + worker 3 + PostgreSQL 1 s = 60 ms a turn.
    assert cpu_ms_per_turn(_row(50), TOKENS) == pytest.approx(60.0)
    # The floor's own processes (server and worker), never the emulator: 2.5 s → 25 ms.
    assert cpu_ms_per_turn(_floor(50), TOKENS) == pytest.approx(25.0)
    assert cpu_ms_per_turn(_row(50, delivered=0), TOKENS) is None


def test_compare_gives_product_floor_ratio_and_excess_for_each_figure() -> None:
    against = compare(_row(100, token=(110.0, 446.0), ttft=(53.0, 99.0)),
                      _floor(100, token=(31.0, 85.0), ttft=(8.7, 25.0)), TOKENS)
    assert set(against) == {"token_p50", "token_p99", "ttft_p50", "ttft_p99", "cpu_per_turn"}
    assert against["token_p99"]["product"] == 446.0 and against["token_p99"]["floor"] == 85.0
    assert against["token_p99"]["ratio"] == pytest.approx(446 / 85)
    assert against["ttft_p50"]["excess"] == pytest.approx(44.3)
    assert against["cpu_per_turn"]["ratio"] == pytest.approx(60 / 25)


def test_attach_compares_each_n_with_the_floor_at_the_same_n_only() -> None:
    product = [_row(50), _row(100)]
    reference = [_floor(50), {**_floor(100), "system": "relay"}]
    attach(product, reference, TOKENS)
    assert product[0]["against_floor"]["token_p99"]["ratio"] == pytest.approx(1.0)
    assert product[1]["against_floor"] is None  # only the relay ran at N = 100
    assert product[0]["cpu_ms_per_turn"] == pytest.approx(60.0)
    assert reference[0]["cpu_ms_per_turn"] == pytest.approx(25.0)


def test_attach_compares_each_n_with_the_hop_at_the_same_n_as_well() -> None:
    product = [_row(50, token=(30.0, 170.0)), _row(100)]
    reference = [_floor(50, token=(20.0, 85.0)), _hop(50, token=(25.0, 100.0)), _floor(100)]
    attach(product, reference, TOKENS)
    against = product[0]["against_hop"]
    assert set(against) == {"token_p50", "token_p99", "ttft_p50", "ttft_p99", "cpu_per_turn"}
    assert against["token_p99"] == {"product": 170.0, "hop": 100.0, "ratio": pytest.approx(1.7),
                                    "excess": pytest.approx(70.0)}
    # The hop's server, worker and database: 4 s for 100 turns.
    assert against["cpu_per_turn"]["hop"] == pytest.approx(40.0)
    assert product[0]["against_floor"]["token_p99"]["floor"] == 85.0  # the floor's, as before
    assert product[1]["against_hop"] is None  # no hop at N = 100
    assert reference[1]["cpu_ms_per_turn"] == pytest.approx(40.0)


def test_hop_over_floor_is_what_the_hop_costs_over_the_floor() -> None:
    rows = [_row(50), _row(100)]
    attach(rows, [_floor(50, token=(20.0, 80.0)), _hop(50, token=(25.0, 100.0)), _hop(100)], TOKENS)
    assert hop_over_floor(rows[0]) == {"cpu_per_turn": pytest.approx(40 / 25),
                                       "token_p99": pytest.approx(100 / 80)}
    assert hop_over_floor(rows[1]) == {"cpu_per_turn": None, "token_p99": None}  # no floor at N = 100


def test_the_hop_is_information_and_never_a_budget() -> None:
    without, with_hop = [_row(100, token=(30, 446))], [_row(100, token=(30, 446))]
    attach(without, [_floor(100, token=(20, 85))], TOKENS)
    attach(with_hop, [_floor(100, token=(20, 85)), _hop(100, token=(20, 400))], TOKENS)
    assert list(_outcome(with_hop).items()) == list(_outcome(without).items())
    only_hop = [_row(100)]
    attach(only_hop, [_hop(100)], TOKENS)
    assert {budget.name for budget, _, _ in verdicts(only_hop)} == {b.name for b in BUDGETS if not b.against_floor}


def test_per_token_p99_is_judged_against_twice_the_floor_at_n_100_and_200() -> None:
    name = "per-token added latency p99 ≤ 2 × the floor's"
    product = [_row(50, token=(30, 900)), _row(100, token=(30, 170)), _row(200, token=(30, 171))]
    attach(product, [_floor(n, token=(20, 85)) for n in (50, 100, 200)], TOKENS)
    outcome = _outcome(product)
    assert outcome[(name, 100)] is True  # 170 = 2 × 85
    assert outcome[(name, 200)] is False
    assert (name, 50) not in outcome  # not judged at N = 50


def test_first_token_p50_at_n_50_may_exceed_the_floor_by_15_ms() -> None:
    name = "added time to first token p50 ≤ the floor's + 15 ms"
    rows = [_row(50, ttft=(25.0, 900.0))]
    attach(rows, [_floor(50, ttft=(10.0, 20.0))], TOKENS)
    assert _outcome(rows)[(name, 50)] is True
    rows = [_row(50, ttft=(25.5, 30.0))]
    attach(rows, [_floor(50, ttft=(10.0, 20.0))], TOKENS)
    assert _outcome(rows)[(name, 50)] is False


def test_cpu_per_turn_is_judged_against_twice_the_floor_at_every_n() -> None:
    name = "CPU per turn, web + worker + PostgreSQL, ≤ 2 × the floor's"
    lean = {"web": 1.0, "worker": 2.0, "postgres (bench db)": 2.0}  # 50 ms against 25: 2×
    rows = [_row(50, cpu=lean), _row(300)]  # 60 ms against 25: 2.4×
    attach(rows, [_floor(50), _floor(300)], TOKENS)
    outcome = _outcome(rows)
    assert outcome[(name, 50)] is True and outcome[(name, 300)] is False


def test_without_the_floor_the_ratio_budgets_are_not_judged_and_say_why() -> None:
    rows = [_row(50), _row(100), _row(200)]
    attach(rows, [], TOKENS)
    judged = {budget.name for budget, _, _ in verdicts(rows)}
    assert judged == {b.name for b in BUDGETS if not b.against_floor}
    reasons = dict((budget.name, why) for budget, why in unjudged(rows))
    assert reasons["per-token added latency p99 ≤ 2 × the floor's"] == (
        "no floor measured at N = 100, 200 (run with --reference)")


def test_a_budgets_n_missing_from_the_run_is_named() -> None:
    rows = [_row(300)]
    attach(rows, [_floor(300)], TOKENS)
    reasons = dict((budget.name, why) for budget, why in unjudged(rows))
    assert reasons["per-token added latency p99 ≤ 2 × the floor's"] == "N = 100 and 200 were not part of this run"
    assert reasons["added time to first token p50 ≤ the floor's + 15 ms"] == "N = 50 was not part of this run"


def test_the_absolute_budgets_hold_at_every_n() -> None:
    rows = [_row(50), _row(300, turns={"started": 10, "finished": 9},
                             correctness={"lost": 0, "duplicated": 1, "out_of_order": 0},
                             frames_per_answer_s={"max": 20.5})]
    outcome = _outcome(rows)
    for name in ("every turn finished", "no token lost, duplicated or out of order",
                 "at most 20 frames per answer per second (every answer)"):
        assert outcome[(name, 50)] is True and outcome[(name, 300)] is False


def test_the_floor_table_shows_product_floor_ratio_and_marks() -> None:
    rows = [_row(50, token=(31.0, 68.0), ttft=(20.0, 90.0)), _row(100, token=(53.0, 446.0))]
    attach(rows, [_floor(50, token=(30.0, 98.0), ttft=(8.7, 25.0)), _floor(100, token=(31.0, 85.0))], TOKENS)
    table = floor_table(rows)
    assert "| 50 | 31 / 30 = 1.0× | 68 / 98 = 0.7× |" in table
    assert "20 / 8.7 = 2.3× (+11 ms) (≤ floor + 15 ms: pass)" in table
    assert "446 / 85 = 5.2× (≤ 2×: **FAIL**)" in table
    assert "60 / 25 = 2.4× (≤ 2×: **FAIL**)" in table
    assert "--reference" in floor_table([_row(50)])


def test_the_hop_table_shows_product_hop_ratio_and_hop_over_floor_without_marks() -> None:
    rows = [_row(50, token=(31.0, 170.0), ttft=(20.0, 90.0)), _row(100)]
    attach(rows, [_floor(50, token=(30.0, 85.0)), _hop(50, token=(30.0, 100.0), ttft=(8.0, 25.0))], TOKENS)
    table = hop_table(rows)
    lines = table.splitlines()
    assert len(lines) == 3  # the header, its rule and N = 50: no hop at N = 100
    assert lines[0].endswith("| hop ÷ floor: CPU per turn · per-token p99 |")
    assert lines[2] == ("| 50 | 31 / 30 = 1.0× | 170 / 100 = 1.7× | 20 / 8.0 = 2.5× (+12 ms) | 90 / 25 = 3.6× "
                        "| 60 / 40 = 1.5× | 1.6× · 1.2× |")
    assert "--reference" in hop_table([_row(50)])


def test_the_report_states_the_load_model() -> None:
    text = load_model({"new_conversation_share": 0.2, "orgs": "team", "title_ms": 3500})
    assert "members of one org (a team)" in text and "20 % of turns start a new" in text
    assert "3,500 ms" in text
    assert "an org of their own" in load_model({"new_conversation_share": 0.0, "orgs": "own"})


@pytest.mark.parametrize("share", [0.0, 0.2, 0.25, 0.5, 1.0])
def test_the_stated_share_of_turns_start_a_new_conversation(share: float) -> None:
    plan = new_conversation_turns(tabs=40, per_tab=10, share=share)
    assert len(plan) == 40 and all(len(turns) == 10 for turns in plan)
    new = sum(sum(turns) for turns in plan)
    assert abs(new - share * 400) <= 40 * 0.5  # each tab within one turn of its share
    assert all(abs(sum(turns) - share * 10) < 1 for turns in plan)


def test_new_conversations_are_spread_over_the_tabs_and_turns() -> None:
    plan = new_conversation_turns(tabs=10, per_tab=5, share=0.2)
    first_new = {turns.index(True) for turns in plan if True in turns}
    assert len(first_new) > 1  # not every tab starts its new chat at the same turn
