"""``/metrics`` and the worker's metrics port: Prometheus text behind METRICS_TOKEN, and the
counters moved where the acts happen (this process's own registry; the real web and
worker processes are scraped in test_metrics_processes.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
from celery import current_app
from django.db import transaction
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from answers.engine import run_generation
from answers.replies import start_turn
from billing.models import Reservation
from chatsite import metrics
from conversations.management.commands import runstack
from conversations.models import Message
from tests.conftest import free_port, settings_module
from tests.conversations.wsclient import connect

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token-for-tests-0123456789"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def token(settings: Any) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


# --- The endpoint ----------------------------------------------------------------------------


def test_metrics_do_not_exist_while_no_token_is_set(settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer wrong-token",
                                           f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN])
def test_a_scrape_without_the_token_or_with_a_wrong_one_is_refused(
    token: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert b"teamchat_" not in response.content


def test_the_token_gets_prometheus_text_from_any_address_over_plain_http(
    token: str, settings: Any
) -> None:
    """Prometheus reaches each web process at its container address, over HTTP inside
    the deployment: neither ALLOWED_HOSTS nor the HTTPS redirect stands in its way."""
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    response = Client(HTTP_HOST="172.18.0.5:8000").get(
        "/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {"teamchat_turns_started", "teamchat_turns_ended", "teamchat_live_answers",
            "teamchat_time_to_first_token_seconds", "teamchat_token_interval_seconds",
            "teamchat_provider_errors", "teamchat_spend_usd",
            "teamchat_websocket_connections", "teamchat_queue_depth"} <= names
    # Every other page still checks the host and redirects to HTTPS.
    assert Client(HTTP_HOST="172.18.0.5:8000").get("/accounts/login/").status_code == 400
    assert Client(HTTP_HOST="chat.example.com").get("/accounts/login/").status_code == 301
    assert Client(HTTP_HOST="chat.example.com").post(
        "/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


# --- A worker's port ---------------------------------------------------------------------------


@pytest.fixture
def worker_port(settings: Any, token: str) -> Iterator[str]:
    settings.WORKER_METRICS_PORT = free_port()
    server = metrics.serve_worker_metrics()
    assert server is not None
    yield f"http://127.0.0.1:{settings.WORKER_METRICS_PORT}"
    server.shutdown()
    server.server_close()


def test_a_worker_serves_its_metrics_on_its_port_behind_the_same_token(worker_port: str) -> None:
    answered = httpx2.get(f"{worker_port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answered.status_code == 200
    assert "# TYPE teamchat_turns_ended_total counter" in answered.text
    assert answered.headers["Content-Type"].startswith("text/plain; version=")
    for headers in ({}, {"Authorization": "Bearer nope"}):
        refused = httpx2.get(f"{worker_port}/metrics", headers=headers)
        assert refused.status_code == 401 and "teamchat" not in refused.text
    assert httpx2.get(f"{worker_port}/", headers={
        "Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_a_worker_serves_no_metrics_without_a_port_a_token_or_in_embedded_mode(
    settings: Any
) -> None:
    settings.WORKER_METRICS_PORT, settings.METRICS_TOKEN = 0, TOKEN
    assert metrics.serve_worker_metrics() is None
    settings.WORKER_METRICS_PORT, settings.METRICS_TOKEN = free_port(), ""
    assert metrics.serve_worker_metrics() is None
    settings.METRICS_TOKEN, settings.EMBEDDED = TOKEN, True
    assert metrics.serve_worker_metrics() is None
    with socket.create_server(("127.0.0.1", 0)) as taken:
        settings.EMBEDDED, settings.WORKER_METRICS_PORT = False, taken.getsockname()[1]
        # A port that is taken leaves the worker running, without metrics.
        assert metrics.serve_worker_metrics() is None


# --- Where the acts are counted ----------------------------------------------------------------


@pytest.fixture
def offline_demo_provider(settings: Any, emulator: Any) -> Any:
    settings.OPENAI_API_KEY = ""
    settings.LLM_MAX_ATTEMPTS = 3
    settings.LLM_MAX_RETRY_WAIT = 30
    return emulator


@pytest.mark.django_db
def test_an_answer_counts_its_end_its_first_token_its_token_gaps_its_errors_and_its_spend(
    alice: Any, offline_demo_provider: Any, django_capture_on_commit_callbacks: Any
) -> None:
    tag = f"metrics-{uuid.uuid4().hex[:8]}"
    # The first request fails (a retried 500), the second streams.
    offline_demo_provider.push({"match": tag, "fault": "server_error", "retry_after": 0})
    org = str(alice.memberships.get().organization_id)
    before = {
        "done": sample("teamchat_turns_ended_total", outcome="done", error_code=""),
        "first": sample("teamchat_time_to_first_token_seconds_count"),
        "gaps": sample("teamchat_token_interval_seconds_count"),
        "errors": sample("teamchat_provider_errors_total", code="upstream_error", reason=""),
        "spend": sample("teamchat_spend_usd_total", org=org),
        "live": sample("teamchat_live_answers"),
    }
    with django_capture_on_commit_callbacks(execute=True):
        message = start_turn(user=alice, organization_id=None, conversation_id=None,
                             content=f"Explain Euler's identity ({tag})",
                             reasoning_effort="low").assistant_message
    with django_capture_on_commit_callbacks(execute=True):
        run_generation(message.pk)
    message = Message.objects.get(pk=message.pk)
    assert message.status == Message.Status.DONE, message.error_detail
    charged = Reservation.objects.get(message=message).charged_usd
    assert charged and charged > 0
    assert sample("teamchat_turns_ended_total", outcome="done", error_code="") == before["done"] + 1
    assert sample("teamchat_time_to_first_token_seconds_count") == before["first"] + 1
    deltas = sample("teamchat_token_interval_seconds_count") - before["gaps"]
    assert deltas >= 10  # one per visible delta after the first
    assert sample("teamchat_provider_errors_total", code="upstream_error",
                  reason="") == before["errors"] + 1
    spent = sample("teamchat_spend_usd_total", org=org) - before["spend"]
    assert round(Decimal(spent), 6) == charged
    assert sample("teamchat_live_answers") == before["live"] == 0


@pytest.mark.django_db
def test_spend_counts_only_once_the_settlement_commits(
    django_capture_on_commit_callbacks: Any
) -> None:
    before = sample("teamchat_spend_usd_total", org="424242")
    with django_capture_on_commit_callbacks(execute=False) as callbacks, transaction.atomic():
        metrics.spent_on_commit(424242, Decimal("0.001234"))
    assert sample("teamchat_spend_usd_total", org="424242") == before  # not yet committed
    for callback in callbacks:
        callback()
    assert sample("teamchat_spend_usd_total", org="424242") == pytest.approx(before + 0.001234)
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                metrics.spent_on_commit(424242, Decimal("5"))
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    assert sample("teamchat_spend_usd_total", org="424242") == pytest.approx(before + 0.001234)


def test_the_queue_depth_is_read_from_the_broker_when_scraped(
    token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(current_app.conf.broker_url)
    if not url.startswith("redis"):
        pytest.skip("needs the Redis broker (REDIS_URL)")
    queue = f"metrics-depth-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(current_app.conf, "task_default_queue", queue)
    broker = redis.Redis.from_url(url)
    try:
        broker.rpush(queue, "a", "b", "c")
        scraped = parse(Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
                        .content.decode())
        assert scraped[("teamchat_queue_depth", frozenset({("queue", queue)}))] == 3
    finally:
        broker.delete(queue)
        broker.close()


@pytest.mark.django_db(transaction=True)
async def test_open_websockets_are_counted_until_they_close(alice: Any) -> None:
    before = sample("teamchat_websocket_connections")
    first, second = await connect(alice), await connect(alice)
    for ws in (first, second):
        connected, _ = await ws.connect()
        assert connected
    assert sample("teamchat_websocket_connections") == before + 2
    await first.disconnect()
    assert sample("teamchat_websocket_connections") == before + 1
    await second.disconnect()
    assert sample("teamchat_websocket_connections") == before
    refused = await connect(None)  # never accepted: never counted
    await refused.connect()
    await refused.disconnect()
    assert sample("teamchat_websocket_connections") == before


def test_the_output_timer_times_the_first_token_and_the_gaps_but_not_a_rounds_wait() -> None:
    first, gaps = (sample("teamchat_time_to_first_token_seconds_count"),
                   sample("teamchat_token_interval_seconds_count"))
    timer = metrics.OutputTimer(0.0)
    timer.output()
    timer.output()
    timer.pause()  # a tool round: its wait is no token gap
    timer.output()
    timer.output()
    assert sample("teamchat_time_to_first_token_seconds_count") == first + 1
    assert sample("teamchat_token_interval_seconds_count") == gaps + 2
    taken_over = metrics.OutputTimer(0.0, shown=True)  # its text was shown by another worker
    taken_over.output()
    assert sample("teamchat_time_to_first_token_seconds_count") == first + 1


# --- Several processes of one role (runstack) ---------------------------------------------------


def test_runstack_gives_each_role_its_own_metrics_directory_and_its_workers_one_socket(
    tmp_path: Path, settings: Any
) -> None:
    settings.WORKER_METRICS_PORT, settings.METRICS_TOKEN = free_port(), TOKEN
    web = [runstack.Child(f"web{i}", ["true"]) for i in (1, 2)]
    workers = [runstack.Child(f"worker{i}", ["true"]) for i in (1, 2)]
    listener = runstack.share_metrics(web, workers, str(tmp_path))
    assert listener is not None
    try:
        assert {child.env[metrics.MULTIPROCESS_DIR_ENV] for child in web} == {str(tmp_path / "web")}
        assert {child.env[metrics.MULTIPROCESS_DIR_ENV] for child in workers} == {
            str(tmp_path / "worker")}
        for child in workers:
            assert child.env[metrics.WORKER_METRICS_FD_ENV] == str(listener.fileno())
            assert child.pass_fds == (listener.fileno(),)
        assert all(metrics.WORKER_METRICS_FD_ENV not in child.env for child in web)
        assert listener.getsockname()[1] == settings.WORKER_METRICS_PORT
    finally:
        listener.close()
    settings.METRICS_TOKEN = ""
    assert runstack.share_metrics(web, workers, str(tmp_path)) is None


PROCESS = """
import os, sys, time
import django
django.setup()
from chatsite import metrics
metrics.turn_started()
metrics.turn_ended("done", "")
metrics.live_answers(int(sys.argv[1]))
metrics.TIME_TO_FIRST_TOKEN.observe(0.2)
print(os.getpid(), flush=True)
sys.stdin.read()  # until the test closes it
"""

SCRAPE = """
import django
django.setup()
from chatsite import metrics
print(metrics.exposition().decode())
"""


@pytest.mark.slow
def test_a_scrape_reports_the_sums_of_a_roles_processes_and_a_dead_ones_gauges_drop(
    tmp_path: Path,
) -> None:
    env = {**os.environ, metrics.MULTIPROCESS_DIR_ENV: str(tmp_path),
           "DJANGO_SETTINGS_MODULE": settings_module(), "PYTHONPATH": str(ROOT)}
    children = [subprocess.Popen([sys.executable, "-c", PROCESS, str(live)], cwd=ROOT, env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for live in (3, 4)]
    try:
        pids = [int(child.stdout.readline()) for child in children]  # type: ignore[union-attr]

        def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            result = subprocess.run([sys.executable, "-c", SCRAPE], cwd=ROOT, env=env,
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            return parse(result.stdout)

        scraped = scrape()
        assert scraped[("teamchat_turns_started_total", frozenset())] == 2
        assert scraped[("teamchat_turns_ended_total",
                        frozenset({("outcome", "done"), ("error_code", "")}))] == 2
        assert scraped[("teamchat_time_to_first_token_seconds_count", frozenset())] == 2
        assert scraped[("teamchat_live_answers", frozenset())] == 7
        children[0].stdin.close()  # type: ignore[union-attr]
        children[0].wait(timeout=30)
        metrics.process_ended(pids[0], str(tmp_path))  # what runstack does when a child exits
        scraped = scrape()
        # Its counters stay in the sums (they never go back); its live answers do not.
        assert scraped[("teamchat_turns_started_total", frozenset())] == 2
        assert scraped[("teamchat_live_answers", frozenset())] == 4
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
