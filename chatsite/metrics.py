"""Operations metrics in Prometheus text, from every web and worker process.

The metrics are defined here, in the lowest layer, so that each app counts where its act
happens: a turn queued (``answers.dispatch``), an answer's final state
(``answers.lifecycle``), its output as the worker receives it (``answers.live``), a
provider failure (``llm.types.LLMError``), a settled charge (``billing.quotas``), a
websocket opened or closed (``realtime.consumers``). The queue depth is read from the
broker when scraped.

Who serves them: a web process at ``/metrics`` (``chatsite.middleware.MetricsEndpoint``),
a Celery worker process on ``WORKER_METRICS_PORT`` (:func:`serve_worker_metrics`). Both
ask for ``Authorization: Bearer <METRICS_TOKEN>``: without METRICS_TOKEN the endpoint does
not exist (404), a missing or wrong token gets 401.

One registry per process, except under ``manage.py runstack``: its web processes share
one listening socket, so a scrape reaches whichever process accepts it, and its worker
processes share one metrics port. runstack gives each role a directory of its own
(``PROMETHEUS_MULTIPROC_DIR``, prometheus-client's multiprocess mode): each process
writes its values there and whichever process answers a scrape reports the sum of its
role's processes, those that exited included (counters never go back), live gauges
only of the processes still running (docs/decisions.md#0042).
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db import transaction
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# Set by runstack for each role's processes (see the module docstring).
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The worker metrics socket runstack opened for all its worker processes, as an inherited
# file descriptor (as its web processes share the web port).
WORKER_METRICS_FD_ENV = "WORKER_METRICS_FD"

# --- What is measured ----------------------------------------------------------------------

# No ``*_created`` series beside each counter and histogram: a second series per metric
# that no dashboard reads.
disable_created_metrics()

TURNS_STARTED = Counter(
    "teamchat_turns_started",
    "Turns whose answer was saved and queued for a worker (sends, edits, regenerations).",
)
TURNS_ENDED = Counter(
    "teamchat_turns_ended",
    "Answers that reached a final state, by status (done, failed, cancelled, interrupted) "
    "and error code (empty when there is none).",
    ["outcome", "error_code"],
)
LIVE_ANSWERS = Gauge(
    "teamchat_live_answers", "Answers the worker processes are streaming now.",
    multiprocess_mode="livesum",
)
# From the worker starting an answer (after its claim) to the first visible output.
TIME_TO_FIRST_TOKEN = Histogram(
    "teamchat_time_to_first_token_seconds",
    "Seconds from a worker starting an answer to its first visible output (text, refusal "
    "or tool call), reasoning included.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
TOKEN_INTERVAL = Histogram(
    "teamchat_token_interval_seconds",
    "Seconds between two visible outputs of one answer as its worker receives them (per-"
    "token latency); the wait for a retry's or tool round's first output is not counted.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROVIDER_ERRORS = Counter(
    "teamchat_provider_errors",
    "Model provider failures, by error code and reason (timeout, connection, "
    "configuration...; empty when none): retried attempts included.",
    ["code", "reason"],
)
SPEND = Counter(
    "teamchat_spend_usd",
    "Settled cost charged to each org's budget (answers and titles), in US dollars.",
    ["org"],
)
WEBSOCKETS = Gauge(
    "teamchat_websocket_connections", "Chat websockets open now.", multiprocess_mode="livesum",
)
QUEUE_DEPTH = "teamchat_queue_depth"


def turn_started() -> None:
    TURNS_STARTED.inc()


def turn_ended(outcome: str, error_code: str) -> None:
    TURNS_ENDED.labels(outcome, error_code or "").inc()


def provider_error(code: str, reason: str) -> None:
    PROVIDER_ERRORS.labels(code, reason or "").inc()


def spent_on_commit(org_id: int, amount: Decimal) -> None:
    """Count ``amount`` charged to org ``org_id`` once the settling transaction commits
    (a rolled-back settlement charged nothing). Labelled by id only: bounded, and no
    org's name in a metrics store."""
    if amount:
        transaction.on_commit(lambda: SPEND.labels(str(org_id)).inc(float(amount)), robust=True)


def live_answers(count: int) -> None:
    LIVE_ANSWERS.set(count)


def socket_opened() -> None:
    WEBSOCKETS.inc()


def socket_closed() -> None:
    WEBSOCKETS.dec()


class OutputTimer:
    """One answer's visible output as its worker receives it: the delay of the first
    (time to first token) and the interval before each later one."""

    __slots__ = ("first_seen", "last", "started")

    def __init__(self, started: float, *, shown: bool = False) -> None:
        self.started = started
        # An answer taken over after it showed text has had its first token.
        self.first_seen = shown
        self.last: float | None = None  # None: the next output starts no interval

    def pause(self) -> None:
        """A new upstream request (a retry or a tool round): the model reasons again, and
        that wait is no token interval."""
        self.last = None

    def output(self) -> None:
        now = time.monotonic()
        if not self.first_seen:
            self.first_seen = True
            TIME_TO_FIRST_TOKEN.observe(now - self.started)
        elif self.last is not None:
            TOKEN_INTERVAL.observe(now - self.last)
        self.last = now


# --- The queue, read at scrape time -----------------------------------------------------------


@lru_cache(maxsize=4)
def _broker(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


def queue_depths() -> dict[str, int]:
    """Tasks waiting in each Celery queue this process sends to (the Redis list of the
    queue); empty with a broker that is not Redis (embedded mode) or unreachable."""
    conf = current_app.conf
    url = str(conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://")):
        return {}
    queue = str(conf.task_default_queue)
    try:
        return {queue: int(_broker(url).llen(queue))}
    except (redis.RedisError, OSError) as error:
        logger.warning("could not read the length of the task queue: %s", error)
        return {}


class QueueDepth(Collector):
    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            QUEUE_DEPTH, "Tasks waiting in the broker for a worker, read when scraped (the "
            "same in every process: take the max, not the sum).", labels=["queue"])
        for queue, depth in queue_depths().items():
            family.add_metric([queue], depth)
        yield family

    def describe(self) -> Iterable[Metric]:
        # Without this, registering would collect, reading the broker at import.
        return [GaugeMetricFamily(QUEUE_DEPTH, "", labels=["queue"])]


_queue_depth = QueueDepth()
if not os.environ.get(MULTIPROCESS_DIR_ENV):
    REGISTRY.register(_queue_depth)


# --- Serving them ---------------------------------------------------------------------------


def authorization_status(header: str) -> int:
    """200 when ``header`` (an Authorization header) carries METRICS_TOKEN as a bearer
    token, 404 when no METRICS_TOKEN is set (there are no metrics to serve), else 401.
    The token is compared in constant time."""
    token = settings.METRICS_TOKEN
    if not token:
        return 404
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return 401
    return 200


def exposition() -> bytes:
    """The metrics of this process (of every process of its role under runstack), in
    Prometheus text format."""
    directory = os.environ.get(MULTIPROCESS_DIR_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    registry.register(_queue_depth)
    return generate_latest(registry)


def scrape_response(authorization: str) -> tuple[int, bytes, dict[str, str]]:
    """A scrape's status, body and headers, given its Authorization header."""
    status = authorization_status(authorization)
    if status == 404:
        return 404, b"Not Found\n", {"Content-Type": "text/plain; charset=utf-8"}
    if status == 401:
        return 401, b"A bearer token (METRICS_TOKEN) is required.\n", {
            "Content-Type": "text/plain; charset=utf-8", "WWW-Authenticate": "Bearer"}
    return 200, exposition(), {"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}


def process_ended(pid: int, directory: str | None) -> None:
    """A process of a role (its values in ``directory``) exited: its live gauges no longer
    count; its counters and histograms stay in the sums."""
    if directory:
        mark_process_dead(pid, directory)


class _ScrapeHandler(BaseHTTPRequestHandler):
    server_version = "teamchat-metrics"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?", 1)[0] != METRICS_PATH:
            status, body, headers = 404, b"Not Found\n", {"Content-Type": "text/plain"}
        else:
            status, body, headers = scrape_response(self.headers.get("Authorization", ""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        """No line per scrape: Prometheus calls every 15 seconds."""


class _ScrapeServer(ThreadingHTTPServer):
    daemon_threads = True


def serve_worker_metrics(**_: Any) -> ThreadingHTTPServer | None:
    """Serve this worker process's metrics on WORKER_METRICS_PORT, every interface, from a
    daemon thread (connected to Celery's ``worker_init``). Off when the port is 0 (the
    default), without METRICS_TOKEN, and in embedded mode (the web process's /metrics
    has its worker threads). Under runstack the port is the inherited socket all its
    worker processes accept on."""
    port = settings.WORKER_METRICS_PORT
    if not port or settings.EMBEDDED:
        return None
    if not settings.METRICS_TOKEN:
        logger.info("worker metrics are off: WORKER_METRICS_PORT is set, METRICS_TOKEN is not")
        return None
    inherited = os.environ.get(WORKER_METRICS_FD_ENV, "").strip()
    try:
        server = _ScrapeServer(("", port), _ScrapeHandler, bind_and_activate=not inherited)
        if inherited:
            server.socket.close()
            server.socket = socket.socket(fileno=int(inherited))
    except (OSError, ValueError) as error:
        # A port taken by something else must not stop the worker from answering.
        logger.error("worker metrics are off: cannot listen on port %s: %s", port, error)
        return None
    threading.Thread(target=server.serve_forever, name="metrics-listener", daemon=True).start()
    return server
