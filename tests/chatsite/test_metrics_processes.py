"""The issue's test: real turns over the real stack, scraped from a real web process and a
real Celery worker process, each started as runstack starts it (its web child, its
worker command, each role with its multiprocess metrics directory, the worker's metrics
port, JSON logs), on this run's test database, a private redis-server and the emulator.

The counters move by exactly the turns made: N turns are N more started (web), N more
ended done and N more first tokens (worker), one provider error for the one request the
emulator failed, and the spend of the org equals what its budget was charged, to the
micro-dollar. The JSON log lines carry the request's and the answer's ids, and neither
the metrics token nor a link's secret.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from billing.models import Reservation
from conversations.management.commands.runstack import (
    WORKER_CONCURRENCY,
    side_worker_command,
    web_command,
    worker_command,
)
from conversations.models import Message
from tests.chaos.conftest import Processes, tab_for, wait_for
from tests.chaos.conftest import processes as chaos_processes  # noqa: F401 (a fixture)
from tests.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N = 3
TOKEN = secrets.token_urlsafe(32)
LINK_SECRET = "Zx8" + secrets.token_hex(20)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, token: str | None = TOKEN) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx2.get(f"{url}/metrics", headers=headers, timeout=10)


def samples(url: str) -> Samples:
    response = scrape(url)
    assert response.status_code == 200, response.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def json_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


class Stack:
    def __init__(self, processes: Processes, tmp_path: Path) -> None:
        _, self.redis_url = processes.redis(data_dir=tmp_path / "redis")
        common = {"REDIS_URL": self.redis_url, "CHANNEL_PREFIX": "metrics",
                  "METRICS_TOKEN": TOKEN, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
        (tmp_path / "web-metrics").mkdir()
        (tmp_path / "worker-metrics").mkdir()
        self.worker_url = f"http://127.0.0.1:{free_port()}"
        self.worker = processes.spawn(
            "worker", worker_command(1, concurrency=WORKER_CONCURRENCY), **common,
            WORKER_METRICS_PORT=self.worker_url.rsplit(":", 1)[1],
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "worker-metrics"))
        # runstack's side worker (the titles), in the worker role's metrics directory; the
        # worker process's scrape sums both. (runstack hands it the shared metrics socket.)
        self.side = processes.spawn(
            "side", side_worker_command(1, concurrency=2), **common, WORKER_METRICS_PORT="0",
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "worker-metrics"))
        port = free_port()
        self.web_url = f"http://127.0.0.1:{port}"
        self.web = processes.spawn(
            "web", web_command(host="127.0.0.1", port=port, concurrency=WORKER_CONCURRENCY),
            **common, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "web-metrics"))
        wait_for(self.serving, timeout=60, what="the web process to serve", every=0.2)
        wait_for(self.worker_ready, timeout=60, what="the worker to consume", every=0.2)

    def serving(self) -> bool:
        assert self.web.alive(), self.web.tail()
        try:
            return httpx2.get(f"{self.web_url}/healthz", timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False

    def worker_ready(self) -> bool:
        assert self.worker.alive(), self.worker.tail()
        return any(" ready." in line.get("event", "") for line in json_lines(self.worker.log))

    def queue_is_empty(self) -> bool:
        broker = redis.Redis.from_url(self.redis_url)
        try:
            return broker.llen("celery") + broker.llen("side") + broker.hlen("unacked") == 0
        finally:
            broker.close()


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Stack:
    return Stack(request.getfixturevalue("chaos_processes"), tmp_path)


async def ask_all(tabs: list[Any], tags: list[str], during: Any) -> None:
    asks = [asyncio.create_task(tab.ask(f"Tell me about metrics ({tag})", tag=tag))
            for tab, tag in zip(tabs, tags, strict=True)]
    await during(tabs)
    await asyncio.wait_for(asyncio.gather(*asks), timeout=120)
    for tab in tabs:
        await tab.close()


def test_scrapes_of_a_web_and_a_worker_process_move_by_exactly_the_turns_made(
    stack: Stack, emulator: Any, alice: Any, tmp_path: Path
) -> None:
    org = alice.memberships.get().organization_id

    # The endpoints refuse a scrape without the token, or with a wrong one.
    for url in (stack.web_url, stack.worker_url):
        assert scrape(url, token=None).status_code == 401
        assert scrape(url, token="wrong").status_code == 401
    web_before, worker_before = samples(stack.web_url), samples(stack.worker_url)

    tags = [f"turn-{i}-{secrets.token_hex(3)}" for i in range(N)]
    # The first answer's first request fails (a 500 the worker retries); the last streams
    # slowly enough to be scraped while it is live.
    emulator.push({"match": tags[0], "fault": "server_error", "retry_after": 0})
    emulator.push({"match": tags[-1], "reply_tokens": 150, "tokens_per_second": 40})
    seen_live: dict[str, float] = {}

    async def while_streaming(tabs: list[Any]) -> None:
        slow = tabs[-1]
        for _ in range(600):
            if slow.answer.last_seq and slow.answer.final is None:
                break
            await asyncio.sleep(0.05)
        worker, web = await asyncio.gather(asyncio.to_thread(samples, stack.worker_url),
                                           asyncio.to_thread(samples, stack.web_url))
        seen_live["answers"] = value(worker, "teamchat_live_answers")
        seen_live["sockets"] = value(web, "teamchat_websocket_connections")

    tabs = [tab_for(alice, stack.web_url) for _ in tags]
    asyncio.run(ask_all(tabs, tags, while_streaming))
    ids = [tab.answer.message_id for tab in tabs]
    assert [tab.answer.final["type"] for tab in tabs] == ["done"] * N
    assert seen_live["answers"] >= 1
    assert seen_live["sockets"] == N

    def every_charge_settled() -> bool:
        return (stack.queue_is_empty()
                and not Reservation.objects.filter(settled_at=None).exists()
                and Reservation.objects.filter(kind=Reservation.Kind.TITLE).count() == N)

    wait_for(every_charge_settled, timeout=60, what="the answers and titles to settle", every=0.2)
    charges = Reservation.objects.filter(org_period__organization_id=org).values_list(
        "charged_usd", flat=True)
    charged = sum((amount or Decimal(0) for amount in charges), Decimal(0))
    assert charged > 0
    wait_for(lambda: value(samples(stack.web_url), "teamchat_websocket_connections") == 0,
             timeout=10, what="the closed sockets to be counted out")
    web, worker = samples(stack.web_url), samples(stack.worker_url)

    def moved(scraped: Samples, before: Samples, name: str, **labels: str) -> float:
        return value(scraped, name, **labels) - value(before, name, **labels)

    assert moved(web, web_before, "teamchat_turns_started_total") == N
    assert moved(worker, worker_before, "teamchat_turns_started_total") == 0
    assert moved(worker, worker_before, "teamchat_turns_ended_total",
                 outcome="done", error_code="") == N
    assert moved(web, web_before, "teamchat_turns_ended_total", outcome="done", error_code="") == 0
    assert moved(worker, worker_before, "teamchat_time_to_first_token_seconds_count") == N
    assert moved(worker, worker_before, "teamchat_token_interval_seconds_count") > N * 10
    assert moved(worker, worker_before, "teamchat_provider_errors_total",
                 code="upstream_error", reason="") == 1
    spent = (moved(web, web_before, "teamchat_spend_usd_total", org=str(org))
             + moved(worker, worker_before, "teamchat_spend_usd_total", org=str(org)))
    assert round(Decimal(spent), 6) == charged
    assert value(worker, "teamchat_live_answers") == 0
    assert value(web, "teamchat_queue_depth", queue="celery") == 0
    assert Message.objects.filter(pk__in=ids, status=Message.Status.DONE).count() == N

    # JSON logs: an answer's lines carry its id; a request's lines their request's id.
    httpx2.get(f"{stack.web_url}/invite/{LINK_SECRET}/", timeout=10)
    wait_for(lambda: any("Not Found: /invite/" in line.get("event", "")
                         for line in json_lines(stack.web.log)),
             timeout=10, what="the web process to log the 404")
    worker_lines = json_lines(stack.worker.log)
    for answer in ids:
        assert any(line.get("answer_id") == answer for line in worker_lines), answer
    retried = [line for line in worker_lines if f"retrying message {ids[0]}" in line["event"]]
    assert len(retried) == 1
    assert retried[0]["answer_id"] == ids[0]
    assert retried[0]["task"] == "conversations.tasks.generate_reply"
    web_lines = json_lines(stack.web.log)
    refused = [line for line in web_lines if line["event"] == "Unauthorized: /metrics"]
    assert refused and all(len(line["request_id"]) == 16 for line in refused)
    not_found = [line for line in web_lines if line["event"].startswith("Not Found: /invite/")]
    assert not_found[0]["event"] == "Not Found: /invite/[masked]/"
    access = [line for line in web_lines if line.get("logger") == "uvicorn.access"]
    assert access and all("request_id" in line for line in access)
    for log in (stack.web.log, stack.worker.log):
        text = log.read_text(errors="replace")
        assert TOKEN not in text and LINK_SECRET not in text
    # Each process kept its values in its role's directory, as under runstack.
    assert list((tmp_path / "web-metrics").glob("*.db"))
    assert list((tmp_path / "worker-metrics").glob("*.db"))
