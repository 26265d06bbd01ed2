"""bench.analysis: the frame rate an answer is judged on (issue 23's ≤ 20 frames per
answer per second) counts each frame in the phase it came in."""

from __future__ import annotations

from typing import Any

import pytest

from bench.analysis import analyse_answer
from bench.load import Answer

TOKENS = 300
RATE = 100.0  # the emulator's tokens per second
THINK_S = 0.5


def _answer(*, first_token: float, waiting_frames: list[dict[str, Any]], delta_frames: int) -> Answer:
    """An answer sent at t = 0 whose ``waiting_frames`` come evenly before the upstream's
    first token (at ``first_token`` s), then its 300 tokens in ``delta_frames`` deltas at
    the emulator's pace, then ``done``."""
    answer = Answer(slot=0, client_id="c", t_send=0.0, t_created=0.01, message_id=1)
    for i, frame in enumerate(waiting_frames):
        answer.frames.append((first_token * (i + 1) / (len(waiting_frames) + 1), frame))
    per_frame = TOKENS // delta_frames
    for seq in range(1, delta_frames + 1):
        numbers = range((seq - 1) * per_frame, seq * per_frame)
        text = "".join(f" {n}@{first_token + n / RATE:.3f}" for n in numbers)
        received = first_token + numbers[-1] / RATE + 0.005
        answer.frames.append((received, {"type": "delta", "message": 1, "seq": seq, "text": text}))
    answer.frames.append((answer.frames[-1][0] + 0.005,
                          {"type": "done", "message": 1, "seq": delta_frames + 1}))
    return answer


def _first_delta(answer: Answer) -> float:
    return next(at for at, frame in answer.frames if frame["type"] == "delta")


def _rate(answer: Answer) -> float:
    result = analyse_answer(answer, expected=list(range(TOKENS)), tokens_per_second=RATE,
                            think_s=THINK_S)
    assert result.ok, result.problem
    assert result.all_frames_per_s is not None
    return result.all_frames_per_s


def test_an_answer_that_waited_is_not_charged_its_queued_frames_against_its_stream() -> None:
    # 11 s waiting for a worker: a queued frame a second, then a thinking frame; then 50
    # deltas over the 3 s stream. Divided by the stream alone this was 63 / 3 = 21 a second.
    waiting = [{"type": "queued", "message": 1, "ahead": 11 - i} for i in range(11)]
    waiting.append({"type": "thinking", "message": 1})
    answer = _answer(first_token=11.5, waiting_frames=waiting, delta_frames=50)
    # The waiting phase: message.created and 12 frames over 11.5 s; the stream: 51 over 3 s.
    assert _rate(answer) == pytest.approx(51 / 3.0)
    assert 13 / _first_delta(answer) < 51 / 3.0


def test_a_stream_that_sends_too_many_frames_is_still_caught() -> None:
    answer = _answer(first_token=THINK_S, waiting_frames=[{"type": "thinking", "message": 1}],
                     delta_frames=100)
    assert _rate(answer) == pytest.approx(101 / 3.0)
    assert _rate(answer) > 20


def test_frames_flooding_the_wait_are_caught_too() -> None:
    # 40 thinking frames and message.created in the 2.8 s before the first delta, against
    # 11 frames over the 3 s stream.
    waiting = [{"type": "thinking", "message": 1}] * 40
    answer = _answer(first_token=2.5, waiting_frames=waiting, delta_frames=10)
    assert _rate(answer) == pytest.approx(41 / _first_delta(answer))
    waiting = [{"type": "thinking", "message": 1}] * 60
    assert _rate(_answer(first_token=2.5, waiting_frames=waiting, delta_frames=10)) > 20


def test_a_short_wait_counts_as_a_second() -> None:
    # message.created and one thinking frame 50 ms apart are no flood of 40 a second.
    answer = _answer(first_token=0.05, waiting_frames=[{"type": "thinking", "message": 1}],
                     delta_frames=50)
    assert _rate(answer) == pytest.approx(51 / 3.0)
