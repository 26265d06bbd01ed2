"""bench.turn_cost: CPU per turn from the one-token step, and the per-token split."""

from __future__ import annotations

from bench.closed_loop import LoopRun
from bench.cpu import TICK, Snapshot
from bench.load import Answer
from bench.turn_cost import analyse, split


def _snapshot(web: int, worker: int) -> Snapshot:
    """CPU clock ticks of one web and one worker process."""
    return Snapshot({"web-1": web, "worker-1": worker}, {"web-1": 0, "worker-1": 0}, {}, 0, 0)


def _answer(slot: int, ended: float | None, failure: str = "") -> Answer:
    return Answer(slot, f"c{slot}-{ended}", t_send=0.0, message_id=1, t_end=ended, failure=failure)


def test_cpu_per_turn_counts_only_turns_that_ended_in_the_window() -> None:
    answers = [_answer(0, 11.0), _answer(1, 12.0), _answer(0, 15.0), _answer(1, 19.5),
               _answer(0, 9.0),  # before the window
               _answer(1, 21.0),  # after it
               _answer(0, 13.0, failure="timeout")]
    run = LoopRun(answers=answers, window=(10.0, 20.0), cpu=(_snapshot(100, 200), _snapshot(100 + 4 * TICK // 100, 200 + 6 * TICK // 100)))
    result = analyse(run)
    assert result["turns"] == 4 and result["started"] == 7 and result["failed"] == 1
    per_turn = result["cpu_ms_per_turn"]
    assert round(per_turn["web"], 6) == 10.0 and round(per_turn["worker"], 6) == 15.0
    assert round(per_turn["web + worker"], 6) == 25.0


def test_the_split_takes_each_turns_fixed_cost_out_of_cpu_per_token() -> None:
    turn = {"cpu_ms_per_turn": {"web": 9.0, "worker": 12.0, "web + worker": 21.0}}
    # 48 ms per 1,000 tokens on the web side, of which 9 ms per 300-token answer is the turn's.
    row = split({"web": 48.0, "worker": 93.0}, turn, tokens_per_answer=300)
    assert row["token_us"] == {"web": 18.0, "worker": 53.0, "web + worker": 71.0}
    assert row["turn_ms"]["web + worker"] == 21.0

