"""bench.reference: the reference servers speak the product's frames, the floor does its
per-turn work for real (its rows in PostgreSQL, the claim by a Celery worker), and the hop
streams in a Celery worker whose frames reach the web process through Redis."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from django.db import connection
from websockets.sync.client import connect

from bench.analysis import tab_deltas
from bench.reference import CLAIM_THREADS, FLOOR_MESSAGE, FLOOR_RESERVATION, app, create_tables
from bench.reference_hop import HOP_QUEUE, REPLAY_PREFIX, replay_key
from bench.sustained_report import reference_section
from tests.chaos.conftest import Processes, processes, wait_for  # noqa: F401 - the fixture
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def _server(procs: Processes, mode: str, emulator_url: str) -> str:
    import httpx2

    port = free_port()
    proc = procs.spawn(mode, [sys.executable, "-m", "bench.reference", "--port", str(port),
                              "--emulator", emulator_url, "--mode", mode, "--flush-ms", "60"])

    def up() -> bool:
        assert proc.alive(), proc.tail()
        try:
            return httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False

    wait_for(up, timeout=30, what=f"the {mode} reference server", every=0.1)
    return f"ws://127.0.0.1:{port}/ws/chat/"


def _drop_floor_tables() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {FLOOR_MESSAGE}, {FLOOR_RESERVATION}")


def _turn(url: str, client_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send one message as the bench's tabs do; the message.created frame and the rest."""
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "send", "conversation": None, "content": "bench",
                            "reasoning_effort": "low", "client_id": client_id}))
        created = json.loads(ws.recv(timeout=10))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] != "done":
            frames.append(json.loads(ws.recv(timeout=30)))
    return created, frames


def _assert_answer_frames(created: dict[str, Any], frames: list[dict[str, Any]], client_id: str) -> str:
    """message.created for this send, deltas numbered 1..n, done numbered n + 1; the text."""
    assert created["type"] == "message.created" and created["client_id"] == client_id
    answer = created["assistant_message"]
    assert {f["message"] for f in frames} == {answer}
    deltas, repeats = tab_deltas([(0.0, f) for f in frames])
    assert repeats == 0 and [f["seq"] for _, f in deltas] == list(range(1, len(deltas) + 1))
    assert frames[-1]["seq"] == len(deltas) + 1 and frames[-1]["status"] == "done"
    return "".join(f["text"] for _, f in deltas)


@pytest.mark.slow  # starts a child process
def test_the_relay_streams_the_emulators_answer_in_the_products_frames(processes: Processes,  # noqa: F811
                                                                     emulator: Any) -> None:
    from django.conf import settings

    url = _server(processes, "relay", settings.EMULATOR_URL)
    created, frames = _turn(url, "relay-1")
    text = _assert_answer_frames(created, frames, "relay-1")
    assert text.strip(), "the emulator's answer came through"
    # The flush window batches tokens: fewer delta frames than tokens.
    assert len(frames) - 1 < len(text.split())


def _start_worker(procs: Processes, name: str, queue: str) -> None:
    """A worker of bench.reference's Celery app on ``queue``, once it answers a ping."""
    worker = procs.spawn(name, [
        sys.executable, "-m", "celery", "-A", "bench.reference", "worker", "--pool", "threads",
        "--concurrency", str(CLAIM_THREADS), "--loglevel", "WARNING", "--queues", queue,
        "--hostname", f"{name}-{procs.count}@%h"], STREAM_FLUSH_MS="60")
    app.conf.broker_url = procs.env["REDIS_URL"]

    def worker_up() -> bool:
        assert worker.alive(), worker.tail()
        return bool(app.control.ping(timeout=0.5))

    wait_for(worker_up, timeout=60, what=f"the {name}", every=0.2)


def _floor_tables(procs: Processes, request: pytest.FixtureRequest) -> None:
    import psycopg

    with psycopg.connect(procs.env["DATABASE_URL"], autocommit=True) as conn:
        create_tables(conn)
    request.addfinalizer(_drop_floor_tables)


def _assert_turn_stored(created: dict[str, Any], text: str) -> None:
    """The question, the answer done with ``text`` and claimed once, its reservation settled."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, role, status, content, claims, parent_id FROM {FLOOR_MESSAGE} ORDER BY id")
        rows = cursor.fetchall()
        cursor.execute(f"SELECT message_id, charged_usd, settled_at IS NOT NULL FROM {FLOOR_RESERVATION}")
        reservations = cursor.fetchall()
    question, answer = rows
    assert question[0] == created["user_message"] and question[1:3] == ("user", "done")
    assert answer[0] == created["assistant_message"] and answer[1:4] == ("assistant", "done", text)
    assert answer[4] == 1, "the Celery worker claimed the answer once"
    assert answer[5] == question[0]
    assert len(reservations) == 1
    message_id, charged, settled = reservations[0]
    assert message_id == answer[0] and str(charged) == "0.001000" and settled


@pytest.mark.slow  # starts a child process
def test_the_floor_stores_the_turn_has_a_celery_worker_claim_it_and_settles_it(
        processes: Processes, emulator: Any, request: pytest.FixtureRequest) -> None:  # noqa: F811
    from django.conf import settings

    _floor_tables(processes, request)
    # The answer starts after a pause, long after the worker's claim has run.
    emulator.config.think_ms = dict.fromkeys(("minimal", "low", "medium", "high"), 300)
    _start_worker(processes, "floor-worker", "bench-reference")
    url = _server(processes, "floor", settings.EMULATOR_URL)

    created, frames = _turn(url, "floor-1")
    text = _assert_answer_frames(created, frames, "floor-1")
    _assert_turn_stored(created, text)


def _upstream_text() -> str:
    """The emulator's answer to the reference servers' request (its replies are
    deterministic), asked without streaming."""
    import httpx2
    from django.conf import settings

    response = httpx2.post(f"{settings.EMULATOR_URL}/v1/chat/completions", timeout=30,
                           headers={"Authorization": "Bearer bench"}, json={
        "model": "o3-mini", "messages": [{"role": "user", "content": "bench"}], "reasoning_effort": "low"})
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.mark.slow  # starts child processes
def test_the_hop_streams_in_a_celery_worker_and_reaches_the_socket_through_redis(
        processes: Processes, emulator: Any, request: pytest.FixtureRequest) -> None:  # noqa: F811
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(processes.env["REDIS_URL"])

    def drop_replay_lists() -> None:  # answer ids start again with the tables
        for key in client.scan_iter(f"{REPLAY_PREFIX}*"):
            client.delete(key)

    drop_replay_lists()
    request.addfinalizer(drop_replay_lists)
    _floor_tables(processes, request)
    _start_worker(processes, "hop-worker", HOP_QUEUE)
    url = _server(processes, "hop", settings.EMULATOR_URL)

    created, frames = _turn(url, "hop-1")
    text = _assert_answer_frames(created, frames, "hop-1")
    assert text == _upstream_text()
    assert len(frames) - 1 < len(text.split()), "the worker batched tokens in the flush window"
    _assert_turn_stored(created, text)
    # Every frame the socket got, in order, is in the answer's replay list, which expires.
    key = replay_key(created["assistant_message"])
    assert [json.loads(item) for item in client.lrange(key, 0, -1)] == frames
    assert client.ttl(key) > 0


def test_the_report_puts_each_reference_row_beside_its_cpu_and_the_machines() -> None:
    row = {
        "system": "floor", "streams": 200, "cores": 2, "window_s": 10.0,
        "processes": ["floor worker-1", "floor-1"],
        "turns": {"started": 10, "finished": 10},
        "token_added_ms": {"p50": 40.0, "p99": 180.0}, "ttft_added_ms": {"p50": 90.0, "p99": 300.0},
        "tokens": {"delivered_per_s": 100.0, "offered_per_s": 100.0, "ratio": 1.0},
        "correctness": {"lost": 0, "duplicated": 0, "out_of_order": 0},
        "frames_per_answer_s": {"p50": 15.0, "max": 16.0},
        "cpu_ms_per_1k_tokens": {},
        "cpu_s": {"floor-1": 6.0, "floor worker-1": 1.0, "postgres (bench db)": 2.0, "emulator": 5.0,
                  "bench clients": 1.5, "machine busy": 17.0, "machine capacity": 20.0},
    }
    line = reference_section([row])[-2]
    assert line.startswith("| relay + least Celery and PostgreSQL work per turn | 200 | 10 / 10 | 40 / 180 |")
    assert "| 60 % · 10 % · 20 % · 50 % · 15 % | 85 % of 2 cores |" in line


def test_the_report_names_the_hop_and_gives_hop_over_floor_at_each_n() -> None:
    def row(system: str, names: list[str], cpu_ms_per_turn: float, token_p99: float) -> dict[str, Any]:
        return {
            "system": system, "streams": 100, "cores": 2, "window_s": 10.0, "processes": names,
            "turns": {"started": 10, "finished": 10},
            "token_added_ms": {"p50": 40.0, "p99": token_p99}, "ttft_added_ms": {"p50": 9.0, "p99": 30.0},
            "tokens": {"delivered_per_s": 100.0, "offered_per_s": 100.0, "ratio": 1.0},
            "correctness": {"lost": 0, "duplicated": 0, "out_of_order": 0},
            "frames_per_answer_s": {"p50": 15.0, "max": 16.0}, "cpu_ms_per_1k_tokens": {},
            "cpu_s": {names[1]: 5.0, names[0]: 2.0, "postgres (bench db)": 1.0,
                      "machine busy": 10.0, "machine capacity": 20.0},
            "cpu_ms_per_turn": cpu_ms_per_turn,
        }

    lines = reference_section([row("floor", ["floor worker-1", "floor-1"], 20.0, 80.0),
                               row("hop", ["hop worker-1", "hop-1"], 30.0, 120.0)])
    hop = next(line for line in lines if line.startswith("| floor + DESIGN's hop"))
    assert "| 100 | 10 / 10 | 40 / 120 |" in hop and "| 50 % · 20 % · 10 % ·" in hop
    assert ("- N = 100: hop ÷ floor, CPU ms per turn (server + worker + PostgreSQL) 30 / 20 = 1.5×, "
            "per-token added p99 120 / 80 ms = 1.5×") in lines
