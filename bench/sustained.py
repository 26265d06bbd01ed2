"""From a closed-loop run's turns to one row of the sustained-load table.

"Added" always means observed minus what the emulator's pacing alone would give, so
the figures are the stack's own (web, worker, Redis, PostgreSQL), not the model's:

- per-token added latency: tab receive time − the send time the emulator wrote into
  the token, for every token the emulator sent inside the measured window;
- added time to first token: first delta received − send − the reasoning pause, for
  every turn sent inside the window (queueing for a worker counts: the user waits);
- offered tokens: what the emulator's pacing would have put in front of the tabs
  inside the window had the stack added nothing (token k of an answer at send +
  reasoning pause + k / rate); delivered: tokens the tabs received inside the window.
  Both are counted only for accepted turns (a refused send has no answer to offer);
- CPU per 1,000 tokens: each process's CPU seconds over the window ÷ delivered tokens.

Correctness (lost, duplicated, out-of-order tokens) and turns finished cover every turn
of the step, the ramp and the wind-down included.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.analysis import AnswerResult, analyse_answer, percentile, summary
from bench.closed_loop import LoopRun
from bench.cpu import CpuMeter
from bench.load import Answer


@dataclass(frozen=True)
class Pacing:
    """The emulator's script: what an answer would look like through a zero-cost stack."""

    tokens: int
    tokens_per_second: float
    think_s: float

    def offered_between(self, sent: float, start: float, end: float) -> int:
        """Tokens of an answer sent at ``sent`` that the emulator's pacing would have
        delivered within [start, end]."""
        first = sent + self.think_s
        interval = 1 / self.tokens_per_second
        low = max(0, math.ceil((start - first) / interval))
        high = min(self.tokens - 1, math.floor((end - first) / interval))
        return max(0, high - low + 1)


def _inside(moment: float, window: tuple[float, float]) -> bool:
    return window[0] <= moment <= window[1]


def turn_counts(answers: list[Answer], results: list[AnswerResult]) -> dict[str, Any]:
    """Started vs finished, and how the others ended."""
    refusals = Counter(answer.failure.split(":", 2)[1].strip() for answer in answers
                       if answer.message_id is None and answer.failure.startswith("refused"))
    return {
        "started": len(answers),
        "finished": sum(r.finished for r in results),
        "new_conversation": sum(answer.new_conversation for answer in answers),
        "refused": sum(refusals.values()),
        "refusal_codes": dict(refusals),
        "ended_in_error": sum(1 for a, r in zip(answers, results, strict=True)
                              if a.message_id is not None and not r.finished and not a.failure),
        "unfinished_at_deadline": sum(1 for a in answers if a.failure == "timeout"),
        "other_failures": dict(Counter(a.failure for a in answers if a.failure
                                       and a.failure != "timeout" and not a.failure.startswith("refused"))),
    }


def token_flow(answers: list[Answer], results: list[AnswerResult], window: tuple[float, float],
               pacing: Pacing) -> dict[str, Any]:
    """Offered vs delivered tokens inside the window, totals and per second."""
    accepted = [(a, r) for a, r in zip(answers, results, strict=True) if a.message_id is not None]
    offered = sum(pacing.offered_between(a.t_send, *window) for a, _ in accepted)
    delivered = sum(1 for _, r in accepted for _, _, received in r.token_times if _inside(received, window))
    seconds = window[1] - window[0]
    return {
        "offered": offered,
        "delivered": delivered,
        "offered_per_s": offered / seconds,
        "delivered_per_s": delivered / seconds,
        "ratio": delivered / offered if offered else None,
    }


def correctness(results: list[AnswerResult]) -> dict[str, int]:
    return {
        "lost": sum(r.lost for r in results),
        "duplicated": sum(r.duplicated for r in results),
        "out_of_order": sum(r.out_of_order_tokens for r in results),
        "seq_gaps": sum(r.seq_gaps for r in results),
        "repeated_frames": sum(r.duplicate_frames for r in results),
        "undelivered_at_deadline": sum(r.undelivered for r in results),
    }


def cpu_per_thousand_tokens(cpu_s: dict[str, float], delivered: int) -> dict[str, float | None]:
    """CPU milliseconds per 1,000 delivered tokens, for every process and role measured."""
    skip = {"machine busy", "machine capacity"}
    return {name: (1000 * seconds / (delivered / 1000) if delivered else None)
            for name, seconds in cpu_s.items() if name not in skip}


def analyse(run: LoopRun, *, expected: list[int], pacing: Pacing) -> dict[str, Any]:
    results = [analyse_answer(a, expected=expected, tokens_per_second=pacing.tokens_per_second,
                              think_s=pacing.think_s) for a in run.answers]
    window = run.window
    in_window = [r for a, r in zip(run.answers, results, strict=True) if _inside(a.t_send, window)]
    flow = token_flow(run.answers, results, window, pacing)
    cpu_s = CpuMeter.diff(*run.cpu)
    emulated = [r.emulator_ratio for r in results if r.emulator_ratio is not None]
    return {
        "window_s": window[1] - window[0],
        "turns": turn_counts(run.answers, results),
        "token_added_ms": summary([(received - sent) * 1000 for r in results
                                   for _, sent, received in r.token_times if _inside(sent, window)]),
        "ttft_added_ms": summary([r.first_delta_added_ms for r in in_window
                                  if r.first_delta_added_ms is not None]),
        # Where the wait before the first token goes: send → message.created (the web
        # process's start_turn), → the first frame (a worker claimed it), → the emulator
        # received the request (its first token's send time − the reasoning pause).
        "created_ms": summary([r.created_ms for r in in_window if r.created_ms is not None]),
        "first_event_ms": summary([r.first_event_ms for r in in_window if r.first_event_ms is not None]),
        "upstream_request_ms": summary([r.admission_ms for r in in_window if r.admission_ms is not None]),
        "tokens": flow,
        "correctness": correctness(results),
        "frames_per_answer_s": summary([r.all_frames_per_s for r in in_window
                                        if r.all_frames_per_s is not None]),
        "delta_frames_per_answer_s": summary([r.frames_per_s for r in in_window
                                              if r.frames_per_s is not None]),
        "frames_per_answer": summary([float(r.frames_received) for r in in_window if r.finished]),
        "cpu_s": cpu_s,
        "cpu_ms_per_1k_tokens": cpu_per_thousand_tokens(cpu_s, flow["delivered"]),
        "emulator_pacing": {"mean": sum(emulated) / len(emulated) if emulated else None,
                            "p1": percentile(emulated, 1)},
        "problems": dict(Counter(r.problem for r in results if r.problem).most_common(5)),
    }
