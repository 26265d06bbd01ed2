"""What a turn costs outside its stream, and what each streamed token costs on top.

CPU per 1,000 tokens in the sustained table mixes two costs. A turn has fixed work: the
web process starts it (checks, locks, the question, the pending answer and its
reservation) and the worker claims it, builds the prompt, opens the provider request and
ends it (the final row, settlement, the final frame). A streamed token has its own: the
worker reads the provider's chunk and publishes deltas, the web process forwards them.
Issue 10 budgets them apart: at most 15 ms per turn and 60 µs per token, web and worker
together.

This step measures the first directly, on the same stack before the sustained steps:
a closed loop whose answers are one token with no reasoning pause, so nearly all the CPU
is per-turn work. CPU per turn of a process = its CPU over the window ÷ the turns that
ended in it. Each sustained row's CPU per token is then its CPU per 1,000 tokens less
its turns' share (turn cost × 1,000 ÷ tokens per answer), which is what streaming adds.
"""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING, Any

from bench.cpu import CpuMeter

if TYPE_CHECKING:
    from bench.closed_loop import LoopRun

# Tabs of the step, and turns each (a turn of one token takes tens of milliseconds).
TABS = 10
TURNS_PER_TAB = 120
ROLES = ("web", "worker", "postgres (bench db)", "redis", "emulator")


def emulator_config(url: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply ``changes`` to the running emulator; returns the values they replaced."""
    with urllib.request.urlopen(f"{url}/_emulator/config", timeout=5) as response:
        before = json.loads(response.read())
    request = urllib.request.Request(f"{url}/_emulator/config", data=json.dumps(changes).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
    return {key: before[key] for key in changes}


def one_token_answers(effort: str) -> dict[str, Any]:
    return {"reply_tokens": 1, "think_ms": {effort: 0}}


def analyse(run: LoopRun) -> dict[str, Any]:
    """CPU ms per turn by role, from the turns that ended inside the window."""
    start, end = run.window
    ended = [a for a in run.answers if a.t_end is not None and start <= a.t_end <= end
             and not a.failure and a.message_id is not None]
    cpu_s = CpuMeter.diff(*run.cpu)
    turns = len(ended)
    per_turn = {role: (1000 * cpu_s.get(role, 0.0) / turns if turns else None) for role in ROLES}
    web, worker = per_turn["web"], per_turn["worker"]
    per_turn["web + worker"] = web + worker if web is not None and worker is not None else None
    return {
        "tabs": len({a.slot for a in run.answers}),
        "turns": turns,
        "started": len(run.answers),
        "failed": sum(1 for a in run.answers if a.failure),
        "window_s": end - start,
        "cpu_ms_per_turn": per_turn,
    }


def split(cpu_ms_per_1k_tokens: dict[str, float | None], turn: dict[str, Any],
          tokens_per_answer: int) -> dict[str, Any]:
    """A sustained row's CPU per token once its turns' fixed cost is taken out (µs: ms
    per 1,000 tokens is µs per token), and the turn cost it was taken from."""
    per_turn = turn["cpu_ms_per_turn"]
    per_token: dict[str, float | None] = {}
    for role in ("web", "worker"):
        total, fixed = cpu_ms_per_1k_tokens.get(role), per_turn.get(role)
        per_token[role] = (None if total is None or fixed is None
                           else max(0.0, total - fixed * 1000 / tokens_per_answer))
    web, worker = per_token["web"], per_token["worker"]
    per_token["web + worker"] = web + worker if web is not None and worker is not None else None
    return {"token_us": per_token, "turn_ms": per_turn}


def render(turn: dict[str, Any] | None) -> list[str]:
    if not turn:
        return []
    per_turn = turn["cpu_ms_per_turn"]

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    return [
        "## CPU per turn, outside the stream",
        "",
        f"{turn['tabs']} tabs in a closed loop, each answer one token with no reasoning pause: "
        f"{turn['turns']:,} turns ended in the {turn['window_s']:.0f} s window "
        f"({turn['failed']} failed). CPU of each role over the window ÷ those turns.",
        "",
        "| web | worker | web + worker | PostgreSQL | Redis | emulator |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {ms(per_turn['web'])} ms | {ms(per_turn['worker'])} ms | {ms(per_turn['web + worker'])} ms | "
        f"{ms(per_turn['postgres (bench db)'])} ms | {ms(per_turn['redis'])} ms | {ms(per_turn['emulator'])} ms |",
        "",
        "The sustained table's *CPU µs per streamed token* is each row's CPU per 1,000 tokens "
        "less this turn cost × 1,000 ÷ the answer's tokens.",
        "",
    ]
