"""Closed-loop sustained load: N tabs, each sending its next message as soon as its
answer has ended, for a fixed measured window.

A wave (every tab sends once, at a planned moment) measures how a burst drains. People
in front of a chat send again only once they have read the answer, so a server meets a
fixed number of people, each waiting for one answer at a time: a closed loop. Its load
is N answers in flight, all the time, and a slower server gets fewer sends rather than a
growing queue, which is why "turns finished" and delivered tokens/s are reported with
the latencies.

Timeline of a step (loop time):

    start ── ramp ──▶ window start ── duration ──▶ window end ── ≤ finish_timeout ──▶ deadline
    first sends spread       measured: tokens, CPU        no new turns; in-flight
    evenly over the ramp                                  turns may still end

The first sends are spread over one nominal answer time so the tabs' turns are out of
phase, as independent people's are, instead of arriving in synchronised waves.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.load import Answer, follow_answer, send_frame

if TYPE_CHECKING:
    from collections.abc import Callable

    from websockets.asyncio.client import ClientConnection

    from bench.cpu import Snapshot

# Head start between scheduling the tabs and the first send, so no tab is late for it.
LEAD_S = 0.2


@dataclass(frozen=True)
class Timing:
    ramp: float  # the first sends are spread evenly over this many seconds
    duration: float  # the measured window; tabs start turns until it ends
    finish_timeout: float  # after the window, in-flight turns get at most this long
    max_turns: int | None = None  # per tab (the warm-up sends one each); None: no limit


@dataclass
class LoopRun:
    answers: list[Answer]
    window: tuple[float, float]  # wall clock, as the frames' receive times
    cpu: tuple[Snapshot, Snapshot]  # at the window's start and end


async def _tab(ws: ClientConnection, slot: int, conversations: list[int | None], *, tag: str, effort: str,
               first_send: float, stop_sending: float, deadline: float,
               max_turns: int | None) -> list[Answer]:
    """One person: send, read the answer to its end, send again, until ``stop_sending``.
    Turn k asks in ``conversations[k]``; where that is None or past the end of the list,
    in a new chat."""
    loop = asyncio.get_running_loop()
    answers: list[Answer] = []
    send_at = first_send
    while send_at < stop_sending and (max_turns is None or len(answers) < max_turns):
        turn = len(answers)
        answer = Answer(slot, f"{tag}-{slot}-{turn}")
        answers.append(answer)
        conversation = conversations[turn] if turn < len(conversations) else None
        answer.new_conversation = conversation is None
        await follow_answer(ws, answer, send_at, deadline,
                            send_frame(answer.client_id, effort, conversation))
        if answer.message_id is None or answer.failure:
            # Refused (rate limit, full queue), connection lost or out of time: a person
            # would not simply send again; the turn is counted as not finished.
            break
        send_at = loop.time()
    return answers


async def _cpu_at(moments: tuple[float, float], snapshot: Callable[[], Snapshot]) -> tuple[Snapshot, Snapshot]:
    """CPU snapshots at two loop times, read in a thread (a /proc scan takes
    milliseconds, which would otherwise delay the frames the tabs are timing)."""
    loop = asyncio.get_running_loop()
    taken = []
    for moment in moments:
        await asyncio.sleep(max(0.0, moment - loop.time()))
        taken.append(await asyncio.to_thread(snapshot))
    return taken[0], taken[1]


async def run(clients: list[ClientConnection], conversations: list[list[int | None]], *, tag: str,
              effort: str, timing: Timing, snapshot: Callable[[], Snapshot]) -> LoopRun:
    """Drive every client as a tab (client i asks in ``conversations[i]``, one per turn)
    and return all their turns with the measured window."""
    loop = asyncio.get_running_loop()
    start = loop.time() + LEAD_S
    window_start = start + timing.ramp
    window_end = window_start + timing.duration
    deadline = window_end + timing.finish_timeout
    to_wall = time.time() - loop.time()
    count = len(clients)
    cpu = asyncio.create_task(_cpu_at((window_start, window_end), snapshot))
    per_tab = await asyncio.gather(*(
        _tab(ws, slot, chats, tag=tag, effort=effort,
             first_send=start + timing.ramp * slot / count,
             stop_sending=window_end, deadline=deadline, max_turns=timing.max_turns)
        for slot, (ws, chats) in enumerate(zip(clients, conversations, strict=True))
    ))
    return LoopRun(answers=[answer for turns in per_tab for answer in turns],
                   window=(window_start + to_wall, window_end + to_wall), cpu=await cpu)
