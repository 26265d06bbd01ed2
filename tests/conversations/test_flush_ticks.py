"""Every answer streaming on one event loop flushes on the same tick (answers.relay's
FlushClock), so the batching publisher sends the deltas of all of them in one Redis round
trip instead of about one per frame. Counts of round trips and frames, never timings:
the answers' text arrives at different moments inside one flush window, as the tokens of
answers started at different times do."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from answers.draft import AnswerDraft
from answers.relay import FlushClock, Relay
from realtime import publishing
from realtime.publishing import BatchPublisher

WINDOW_MS = 200
ANSWERS = 4


class Trips:
    """Stands in for the Redis pipeline: what each round trip carried."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, dict[str, Any]]]] = []

    async def send_many(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        self.batches.append(list(batch))

    def deltas(self) -> list[list[tuple[int, int]]]:
        """Per round trip, the (answer, seq) of the delta frames it carried."""
        return [[(mid, frame["seq"]) for mid, frame in batch if frame["type"] == "delta"]
                for batch in self.batches]


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Trips:
    recorded = Trips()
    monkeypatch.setattr(publishing, "_direct_publisher", lambda: recorded)
    return recorded


def _stream(settings: Any, *, stop_one: bool = False) -> list[Relay]:
    """ANSWERS answers on one loop: each shows its first token, then gets a second
    delta at its own moment inside one flush window; the loop then runs past the tick."""
    settings.STREAM_FLUSH_MS = WINDOW_MS
    relays: list[Relay] = []

    async def main() -> None:
        publisher = BatchPublisher(asyncio.get_running_loop())
        relays.extend(Relay(AnswerDraft(n), sink=publisher.publish) for n in range(1, ANSWERS + 1))
        for relay in relays:
            relay.add_text("First")
        await publisher.sent()
        # Right after a tick, so every second delta below lands in the same window.
        await asyncio.sleep(WINDOW_MS / 1000 - (asyncio.get_running_loop().time() * 1000 % WINDOW_MS) / 1000)
        for relay in relays:
            relay.add_text(f" more for {relay.draft.message_id}")
            if stop_one and relay is relays[0]:
                relay.stop()
            await asyncio.sleep(0.005)
        await asyncio.sleep(2 * WINDOW_MS / 1000)
        await publisher.sent()

    asyncio.run(main())
    return relays


def test_answers_on_one_loop_send_their_deltas_in_one_round_trip_per_tick(
    settings: Any, trips: Trips
) -> None:
    relays = _stream(settings)

    second = [batch for batch in trips.deltas() if any(seq == 2 for _, seq in batch)]
    # Flushed at each answer's own arrival, the four second deltas took four trips.
    assert second == [[(n, 2) for n in range(1, ANSWERS + 1)]], trips.deltas()
    for relay in relays:
        assert relay.draft.seq == 2
        assert relay.draft.text == f"First more for {relay.draft.message_id}"


def test_a_taken_over_answer_is_not_flushed_on_the_tick(settings: Any, trips: Trips) -> None:
    """A relay stopped (the answer was taken over by another worker) sends nothing more:
    the text it still held is the other worker's to show."""
    relays = _stream(settings, stop_one=True)

    sent = [pair for batch in trips.deltas() for pair in batch]
    assert (1, 2) not in sent
    assert relays[0].pending == [" more for 1"]
    assert {(n, 2) for n in range(2, ANSWERS + 1)} <= set(sent)


def test_with_a_zero_window_each_delta_goes_out_as_it_arrives(settings: Any, trips: Trips) -> None:
    settings.STREAM_FLUSH_MS = 0

    async def main() -> Relay:
        publisher = BatchPublisher(asyncio.get_running_loop())
        relay = Relay(AnswerDraft(7), sink=publisher.publish)
        for piece in ("a", "b", "c"):
            relay.add_text(piece)
            await publisher.sent()
        return relay

    relay = asyncio.run(main())

    assert trips.deltas() == [[(7, 1)], [(7, 2)], [(7, 3)]]
    assert relay.pending == []


def _direct() -> Any:
    """The real Redis publisher (``RedisPublisher``), or skip without the pub/sub layer."""
    direct = publishing._direct_publisher()
    if direct is None:
        pytest.skip("needs the Redis pub/sub channel layer")
    return direct


async def _subscribe(direct: Any, ids: tuple[int, ...]) -> Any:
    """A pub/sub connection on the answers' groups, their confirmations read."""
    pubsub = direct.store.async_client().pubsub()
    await pubsub.subscribe(*(f"{direct.prefix}__group__{publishing.message_group(mid)}"
                             for mid in ids))
    for _ in ids:
        await pubsub.get_message(timeout=1)
    return pubsub


async def _receive(direct: Any, pubsub: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` frames published to the subscribed groups, then unsubscribed."""
    received: list[dict[str, Any]] = []
    while len(received) < count:
        message = await pubsub.get_message(timeout=5, ignore_subscribe_messages=True)
        assert message is not None, received
        received.append(direct.layer.deserialize(message["data"])["frame"])
    await pubsub.aclose()
    return received


def test_a_batch_is_buffered_and_published_in_order_even_after_redis_lost_its_scripts(
    settings: Any,
) -> None:
    """The real Redis path (``RedisPublisher.send_many``: one script call per batch).
    A Redis restart forgets loaded scripts (SCRIPT FLUSH does the same): the next batch
    loads it again, and nothing is lost."""
    direct = _direct()
    store = direct.store
    ids = (9_100_000_001, 9_100_000_002)

    async def main() -> list[dict[str, Any]]:
        client = store.async_client()
        for mid in ids:
            await client.delete(f"teamchat:replay:{mid}")
        pubsub = await _subscribe(direct, ids)
        await direct.send_many([
            (ids[0], {"type": "thinking", "message": ids[0], "elapsed_ms": 0}),
            (ids[0], {"type": "delta", "message": ids[0], "seq": 1, "text": "a"}),
            (ids[1], {"type": "delta", "message": ids[1], "seq": 1, "text": "x"}),
        ])
        await client.script_flush()
        await direct.send_many([(ids[0], {"type": "delta", "message": ids[0], "seq": 2, "text": "b"}),
                                (ids[1], {"type": "done", "message": ids[1], "seq": 2})])
        return await _receive(direct, pubsub, 5)

    received = asyncio.run(main())

    assert [(f["message"], f["type"], f.get("seq")) for f in received] == [
        (ids[0], "thinking", None), (ids[0], "delta", 1), (ids[1], "delta", 1),
        (ids[0], "delta", 2), (ids[1], "done", 2),
    ]
    # Only the replayed frames are buffered (no thinking), each once, in order, with a lifetime.
    assert [f["text"] for f in store.read_sync(ids[0])] == ["a", "b"]
    assert [f["type"] for f in store.read_sync(ids[1])] == ["delta", "done"]
    assert 0 < store.sync_client().ttl(f"teamchat:replay:{ids[0]}") <= store.ttl


def test_a_tick_right_after_the_first_token_waits_for_the_next_one(settings: Any, trips: Trips) -> None:
    """The first token goes out at once, off the grid; a tick that falls less than half a
    window later leaves the next text for the tick after, so frames stay a window apart."""
    settings.STREAM_FLUSH_MS = WINDOW_MS

    async def main() -> Relay:
        loop = asyncio.get_running_loop()
        publisher = BatchPublisher(loop)
        relay = Relay(AnswerDraft(11), sink=publisher.publish)
        # Just before a tick: the first token, then more text before the tick fires.
        await asyncio.sleep(WINDOW_MS / 1000 - (loop.time() * 1000 % WINDOW_MS) / 1000 - 0.03)
        relay.add_text("First")
        relay.add_text(" second")
        await asyncio.sleep(0.06)  # the tick has passed: nothing sent yet
        assert relay.pending == [" second"]
        await asyncio.sleep(WINDOW_MS / 1000)
        await publisher.sent()
        return relay

    relay = asyncio.run(main())

    assert trips.deltas() == [[(11, 1)], [(11, 2)]]
    assert relay.draft.text == "First second"


def test_a_tick_set_under_a_longer_window_is_brought_forward_to_todays_window(
    settings: Any, trips: Trips
) -> None:
    """The loop outlives a change of ``STREAM_FLUSH_MS`` (the worker's loop serves every
    answer of the process): a tick set under a longer window must not hold back the
    answers that stream after the change."""

    async def main() -> list[Relay]:
        publisher = BatchPublisher(asyncio.get_running_loop())
        early, late = Relay(AnswerDraft(21), sink=publisher.publish), Relay(
            AnswerDraft(22), sink=publisher.publish)
        settings.STREAM_FLUSH_MS = 10**9  # a tick days away
        early.add_text("First")
        early.add_text(" waits")
        settings.STREAM_FLUSH_MS = WINDOW_MS
        late.add_text("First")
        late.add_text(" goes on the next tick")
        await asyncio.sleep(3 * WINDOW_MS / 1000)
        await publisher.sent()
        return [early, late]

    early, late = asyncio.run(main())

    sent = {pair for batch in trips.deltas() for pair in batch}
    assert {(21, 2), (22, 2)} <= sent
    assert early.pending == [] and late.pending == []
    assert late.draft.text == "First goes on the next tick"


def test_one_answer_failing_on_a_tick_leaves_the_others_flushed(
    settings: Any, trips: Trips, caplog: pytest.LogCaptureFixture
) -> None:
    settings.STREAM_FLUSH_MS = WINDOW_MS

    async def main() -> list[Relay]:
        publisher = BatchPublisher(asyncio.get_running_loop())

        def broken(message_id: int, frame: dict[str, Any]) -> None:
            if frame.get("seq", 0) > 1:
                raise ConnectionError("the sink is gone")
            publisher.publish(message_id, frame)

        relays = [Relay(AnswerDraft(31), sink=broken)]
        relays += [Relay(AnswerDraft(n), sink=publisher.publish) for n in (32, 33)]
        for relay in relays:
            relay.add_text("First")
        for relay in relays:
            relay.add_text(" second")
        await asyncio.sleep(3 * WINDOW_MS / 1000)
        await publisher.sent()
        return relays

    relays = asyncio.run(main())

    sent = {pair for batch in trips.deltas() for pair in batch}
    assert {(31, 1), (32, 1), (32, 2), (33, 1), (33, 2)} == sent
    assert [r.draft.text for r in relays[1:]] == ["First second"] * 2
    assert "message 31: the flush tick failed" in caplog.text


def test_an_append_redis_refuses_leaves_the_rest_of_the_batch_published(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """One frame's buffer cannot take the append (here a key of the wrong type, as an
    out-of-memory refusal would be): that frame and every later one are still published
    live, the other buffers still get theirs, and the refusal is logged."""
    direct = _direct()
    store = direct.store
    ids = (9_100_000_011, 9_100_000_012)

    async def main() -> list[dict[str, Any]]:
        client = store.async_client()
        await client.delete(f"teamchat:replay:{ids[1]}")
        await client.set(f"teamchat:replay:{ids[0]}", "not a list", ex=60)
        pubsub = await _subscribe(direct, ids)
        await direct.send_many([
            (ids[0], {"type": "delta", "message": ids[0], "seq": 1, "text": "a"}),
            (ids[1], {"type": "delta", "message": ids[1], "seq": 1, "text": "x"}),
            (ids[0], {"type": "done", "message": ids[0], "seq": 2}),
        ])
        received = await _receive(direct, pubsub, 3)
        await client.delete(f"teamchat:replay:{ids[0]}")
        return received

    received = asyncio.run(main())

    assert [(f["message"], f["type"]) for f in received] == [
        (ids[0], "delta"), (ids[1], "delta"), (ids[0], "done"),
    ]
    assert [f["text"] for f in store.read_sync(ids[1])] == ["x"]
    assert "2 of 3 frames were published but not buffered for replay" in caplog.text


def test_a_tick_that_falls_now_on_uvloop_takes_more_answers(settings: Any, trips: Trips) -> None:
    """The worker's loop is uvloop, whose call_at returns a plain Handle (no when()) for a
    time less than a millisecond away, as a grid point is when the loop's clock reads it
    (float rounding: (floor(t / p) + 1) * p can equal t). A second answer joining that tick
    must join it, not fail: under load the failure ended answers with a generic error.
    The loop is uvloop's own, its clock read at such an instant while the ticks are set."""
    import uvloop

    class GridClockLoop(uvloop.Loop):  # type: ignore[misc]
        reading: float | None = None

        def time(self) -> float:
            return self.reading if self.reading is not None else float(super().time())

    settings.STREAM_FLUSH_MS = 60
    period = 0.06
    instant = next(k * period for k in range(1, 10_000)
                   if (math.floor(k * period / period) + 1) * period - k * period < 0.001)

    async def main(loop: GridClockLoop) -> list[Relay]:
        publisher = BatchPublisher(loop)
        relays = [Relay(AnswerDraft(n), sink=publisher.publish) for n in (41, 42)]
        for relay in relays:
            relay.add_text("First")
        loop.reading = instant
        relays[0].add_text(" one")  # the tick falls now: a plain Handle
        clock = FlushClock.current()
        assert clock is not None and not isinstance(clock._handle, asyncio.TimerHandle)
        relays[1].add_text(" two")  # joins it
        loop.reading = None
        await asyncio.sleep(4 * period)
        await publisher.sent()
        return relays

    loop = GridClockLoop()
    try:
        first, second = loop.run_until_complete(main(loop))
    finally:
        loop.close()

    assert (first.draft.text, second.draft.text) == ("First one", "First two")
    assert first.pending == second.pending == []
    sent = {pair for batch in trips.deltas() for pair in batch}
    assert {(41, 2), (42, 2)} <= sent
