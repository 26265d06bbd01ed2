"""From recorded frames to the numbers in the report."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.load import Answer

TOKEN = re.compile(r" (\d+)@(\d+(?:\.\d+)?)")


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    data = sorted(values)
    position = (len(data) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def summary(values: list[float]) -> dict[str, float | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
    }


@dataclass
class AnswerResult:
    ok: bool
    problem: str = ""
    finished: bool = False  # the answer's `done` frame arrived (an `error` end is not finished)
    created_ms: float | None = None
    first_event_ms: float | None = None
    first_event_type: str = ""
    first_delta_added_ms: float | None = None
    admission_ms: float | None = None
    token_latencies_ms: list[float] = field(default_factory=list)
    # (token number, emulator send time, tab receive time) in the order the tab shows them.
    token_times: list[tuple[int, float, float]] = field(default_factory=list)
    tokens: int = 0
    lost: int = 0
    undelivered: int = 0  # tokens not received before the client gave up (timeout)
    duplicated: int = 0
    out_of_order: bool = False
    out_of_order_tokens: int = 0
    duplicate_frames: int = 0  # delta frames whose seq had arrived already (the tab drops them)
    seq_gaps: int = 0
    frames: int = 0
    frames_received: int = 0  # every frame of this answer the tab got, message.created included
    delta_frames: int = 0
    streaming_s: float | None = None  # the emulator's first to last token, plus one interval
    frames_per_s: float | None = None
    all_frames_per_s: float | None = None
    delivered_ratio: float | None = None
    emulator_ratio: float | None = None


Frame = tuple[float, dict[str, Any]]


def tab_deltas(frames: list[Frame]) -> tuple[list[Frame], int]:
    """The delta frames as the page applies them: in ``seq`` order, a seq seen before
    dropped (static/js/chat.js). Returns them and the number of dropped repeats."""
    by_seq: dict[int, Frame] = {}
    repeats = 0
    for received, frame in frames:
        if frame.get("type") != "delta" or frame.get("refusal"):
            continue
        seq = frame.get("seq", 0)
        if seq in by_seq:
            repeats += 1
            continue
        by_seq[seq] = (received, frame)
    return [by_seq[seq] for seq in sorted(by_seq)], repeats


def token_times(deltas: list[Frame]) -> list[tuple[int, float, float]]:
    """(number, emulator send time, receive time) of every token in the assembled text.

    The deltas are concatenated and each token gets the receive time of the frame that
    completed it, so a token split over two frames counts from its second half."""
    text_parts: list[str] = []
    ends: list[tuple[int, float]] = []
    offset = 0
    for received, frame in deltas:
        text = frame.get("text", "")
        text_parts.append(text)
        offset += len(text)
        ends.append((offset, received))
    times = []
    frame_index = 0
    for match in TOKEN.finditer("".join(text_parts)):
        while ends[frame_index][0] < match.end():
            frame_index += 1
        times.append((int(match.group(1)), float(match.group(2)), ends[frame_index][1]))
    return times


def out_of_order_count(numbers: list[int]) -> int:
    """Tokens shown after a higher-numbered one."""
    highest = -1
    late = 0
    for number in numbers:
        if number < highest:
            late += 1
        highest = max(highest, number)
    return late


def all_frames_rate(answer: Answer, received: int, streaming_s: float) -> float:
    """Every frame the tab got for an answer, per second of the phase it came in: the
    frames before the first delta (``message.created``, ``queued``, ``thinking``) over the
    time from the send to that delta, at least a second (two frames in 50 ms are no
    flood), and the rest over the upstream's streaming time. The larger rate counts.

    One rate over the streaming time alone counted the once-a-second ``queued`` frames
    of an answer that waited 11 s for a worker as if they had come with its deltas."""
    first_delta = min(at for at, frame in answer.frames if frame.get("type") == "delta")
    before = sum(1 for at, _ in answer.frames if at < first_delta) + (answer.t_created is not None)
    waited = max(first_delta - answer.t_send, 1.0)
    return max(before / waited, (received - before) / streaming_s)


def seq_gap_count(deltas: list[Frame]) -> int:
    seqs = [f.get("seq", 0) for _, f in deltas]
    gaps = sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1)
    return gaps + (1 if seqs and seqs[0] != 1 else 0)


def analyse_answer(answer: Answer, *, expected: list[int], tokens_per_second: float,
                   think_s: float) -> AnswerResult:
    result = AnswerResult(ok=False)
    if answer.t_created is not None:
        result.created_ms = (answer.t_created - answer.t_send) * 1000
    frames = answer.frames
    result.frames = len(frames)
    result.frames_received = len(frames) + (answer.t_created is not None)
    if frames:
        first_time, first = frames[0]
        result.first_event_ms = (first_time - answer.t_send) * 1000
        result.first_event_type = first.get("type", "")
    deltas, result.duplicate_frames = tab_deltas(frames)
    result.delta_frames = len(deltas)
    result.seq_gaps = seq_gap_count(deltas)
    result.token_times = token_times(deltas)
    numbers = [number for number, _, _ in result.token_times]
    stamps = [sent for _, sent, _ in result.token_times]
    result.token_latencies_ms = [(received - sent) * 1000 for _, sent, received in result.token_times]
    result.tokens = len(numbers)
    counts = Counter(numbers)
    result.duplicated = sum(c - 1 for c in counts.values() if c > 1)
    missing = sum(1 for n in expected if n not in counts)
    terminal = frames[-1][1] if frames else {}
    completed = terminal.get("type") in ("done", "error") and not answer.failure
    result.finished = completed and terminal.get("type") == "done"
    # A gap in an answer that ended is a loss; tokens still missing when the client
    # stopped waiting are only late (the worker may still have been streaming them).
    if completed:
        result.lost = missing
    else:
        result.undelivered = missing
    result.out_of_order_tokens = out_of_order_count(numbers)
    result.out_of_order = result.out_of_order_tokens > 0
    if deltas:
        result.first_delta_added_ms = (deltas[0][0] - answer.t_send - think_s) * 1000
    if stamps:
        offered_from = min(stamps)
        interval = 1 / tokens_per_second
        # Offered: the emulator sends len(stamps) tokens at the nominal rate from its first
        # token on. Delivered: the same tokens reached the client by the last delta, so a
        # late start or a backlog lowers the ratio and a catch-up burst cannot raise it
        # above ~1.
        result.delivered_ratio = (len(stamps) * interval) / (deltas[-1][0] - offered_from + interval)
        # Frames per second of upstream streaming (not of arrival, which bunches up when
        # frames queue somewhere): what the source sends a browser.
        result.streaming_s = max(stamps) - offered_from + interval
        result.frames_per_s = len(deltas) / result.streaming_s
        result.all_frames_per_s = all_frames_rate(answer, result.frames_received, result.streaming_s)
        # The emulator's first token left `think_s` after it started the response.
        result.admission_ms = (offered_from - think_s - answer.t_send) * 1000
        emulated = max(stamps) - offered_from
        if emulated > 0:
            result.emulator_ratio = ((len(stamps) - 1) * interval) / emulated
    problems = []
    if answer.failure:
        problems.append(answer.failure)
    elif terminal.get("type") != "done":
        problems.append(f"ended with {terminal.get('type')}: {terminal.get('code', '')} {terminal.get('detail', '')}".strip())
    if result.lost or result.duplicated or result.out_of_order or (completed and numbers != expected):
        problems.append(f"tokens: {result.tokens} received, {result.lost} lost, {result.duplicated} duplicated")
    if result.seq_gaps:
        problems.append(f"{result.seq_gaps} seq gaps")
    result.problem = "; ".join(problems)
    result.ok = not problems
    return result


def analyse_wave(answers: list[Answer], *, expected: list[int], tokens_per_second: float,
                 think_s: float) -> dict[str, Any]:
    results = [analyse_answer(a, expected=expected, tokens_per_second=tokens_per_second, think_s=think_s)
               for a in answers]
    latencies = [ms for r in results for ms in r.token_latencies_ms]
    problems = Counter(r.problem for r in results if r.problem)
    delivered = [r.delivered_ratio for r in results if r.delivered_ratio is not None]
    emulated = [r.emulator_ratio for r in results if r.emulator_ratio is not None]
    fps = [r.frames_per_s for r in results if r.frames_per_s is not None]
    total_tokens = sum(r.tokens for r in results)
    return {
        "answers": len(answers),
        "ok": sum(r.ok for r in results),
        "problems": dict(problems.most_common(5)),
        "created_ms": summary([r.created_ms for r in results if r.created_ms is not None]),
        "first_event_ms": summary([r.first_event_ms for r in results if r.first_event_ms is not None]),
        "first_event_types": dict(Counter(r.first_event_type for r in results if r.first_event_type)),
        "first_delta_added_ms": summary([r.first_delta_added_ms for r in results
                                         if r.first_delta_added_ms is not None]),
        "admission_ms": summary([r.admission_ms for r in results if r.admission_ms is not None]),
        "token_latency_ms": summary(latencies),
        "tokens_offered": len(expected) * len(answers),
        "tokens_received": total_tokens,
        "tokens_lost": sum(r.lost for r in results),
        "tokens_undelivered_at_timeout": sum(r.undelivered for r in results),
        "answers_timed_out": sum(1 for r in results if r.undelivered or "timeout" in r.problem),
        "tokens_duplicated": sum(r.duplicated for r in results),
        "answers_out_of_order": sum(r.out_of_order for r in results),
        "seq_gaps": sum(r.seq_gaps for r in results),
        "delivered_ratio": {
            "mean": sum(delivered) / len(delivered) if delivered else None,
            "p5": percentile(delivered, 5),
            "min": min(delivered) if delivered else None,
        },
        "emulator_pacing_ratio": {
            "mean": sum(emulated) / len(emulated) if emulated else None,
            "min": min(emulated) if emulated else None,
        },
        "frames_per_answer": sum(r.frames for r in results) / len(results) if results else None,
        "delta_frames_per_answer": sum(r.delta_frames for r in results) / len(results) if results else None,
        "frames_per_s": summary(fps),
    }


def _token_times(frames: list[tuple[float, dict[str, Any]]]) -> dict[int, tuple[float, float]]:
    """token number → (time the frame carrying it was seen, emulator send time)."""
    seen: dict[int, tuple[float, float]] = {}
    for at, frame in frames:
        if frame.get("type") != "delta":
            continue
        for match in TOKEN.finditer(frame.get("text", "")):
            seen.setdefault(int(match.group(1)), (at, float(match.group(2))))
    return seen


def analyse_split(answers: list[Answer], tapped: dict[int, list[tuple[float, dict[str, Any]]]]) -> dict[str, Any]:
    """Split each sampled token's latency at the Redis PUBLISH: worker side (emulator
    send → frame published) and web side (published → websocket receive)."""
    worker: list[float] = []
    web: list[float] = []
    first_worker: list[float] = []
    first_web: list[float] = []
    sampled = 0
    for answer in answers:
        frames = tapped.get(answer.message_id or -1)
        if not frames:
            continue
        sampled += 1
        at_redis = _token_times(frames)
        at_client = _token_times(answer.frames)
        for number, (received, sent) in at_client.items():
            published = at_redis.get(number)
            if published is not None:
                worker.append((published[0] - sent) * 1000)
                web.append((received - published[0]) * 1000)
        if answer.frames:
            first_at, first = answer.frames[0]
            match = next((t for t, f in frames if f.get("type") == first.get("type")
                          and f.get("seq") == first.get("seq")), None)
            if match is not None:
                first_worker.append((match - answer.t_send) * 1000)
                first_web.append((first_at - match) * 1000)
    return {
        "answers_sampled": sampled,
        "token_worker_ms": summary(worker),
        "token_web_ms": summary(web),
        "first_event_until_published_ms": summary(first_worker),
        "first_event_published_to_client_ms": summary(first_web),
    }
