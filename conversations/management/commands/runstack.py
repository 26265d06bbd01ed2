"""Serve the product: web, workers and (without an API key) the offline demo model.

This command supervises: it starts each part as a child process, restarts any child
that exits on its own (a crash, an OOM kill) within ``MAX_RESTART_DELAY`` seconds, and
on SIGTERM/SIGINT stops them all, giving each Celery worker WORKER_DRAIN_SECONDS to
finish the answers it is streaming.

Embedded (no DATABASE_URL / REDIS_URL): one child runs the ASGI server, a Celery worker
thread pool, its side pool and the reaper (the in-memory broker and channel layer only
work within one process). Full topology: WEB_PROCESSES web children (uvicorn),
WORKER_PROCESSES Celery workers (node names ``worker1@<host>``, ``worker2@<host>``...),
one side worker for titles (``side1@<host>``) and beat, each its own process. In demo
mode (no provider configured) either way starts the emulator too, as its own process
(``python -m emulator``), before the others. ``--only web`` or ``--only worker`` runs just
that role (one compose service per role; the worker role includes the side worker);
``--serve`` runs the web part in this process instead (what a web child runs).

Every web child serves the one listening socket this supervisor opened and handed down
(``--fd``): the kernel gives each new connection to whichever child accepts first, the
port stays bound while a crashed child restarts (connections wait in the backlog rather
than being refused), and no other process of the same user can join the port, as
SO_REUSEPORT would allow.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chatsite import metrics
from chatsite.celery import app, side_queues
from chatsite.checks import UNDELIVERED_BACKENDS
from chatsite.dbpool import web_pool_size, worker_pool_size
from chatsite.embedded import start_periodic, start_reaper, start_side_worker, start_worker
from chatsite.logs import uvicorn_log_config
from chatsite.signals import embedded_loop_started
from conversations.datajobs import clean_up as clean_up_data_jobs
from conversations.retirements import move_orgs_off_retiring_models
from llm.client import is_demo_mode

MANAGE_PY = str(Path(settings.BASE_DIR) / "manage.py")
POLL_SECONDS = 0.25
# A child that keeps crashing right after its start is restarted after 0.5, 1, 2 s (never
# more): a crash loop does not spin a core, and with the ~2 s a child takes to start,
# even then it serves again within 5 s. A single crash is restarted at the next poll.
MAX_RESTART_DELAY = 2.0
STABLE_AFTER_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
# How long the first start waits for a child that others call (the emulator) to listen.
READY_TIMEOUT_SECONDS = 15.0
# uvicorn's own default: connections that wait while every web child is busy or restarting.
LISTEN_BACKLOG = 2048
# PostgreSQL connections left free by the pools of the processes started here: beat, a
# `manage.py migrate` or `shell`, a psql session, the supervisor's own start-up query.
CONNECTION_HEADROOM = 10
# The smallest pool a lowered process keeps: a web process's turn threads and a worker's
# writes then queue briefly for a connection (each holds one for milliseconds).
MIN_POOL_SIZE = 4
ROLES = ("web", "worker")
# Concurrent answers of each Celery worker process unless --worker-concurrency.
WORKER_CONCURRENCY = 200
# Celery pool threads of a worker: they claim answers and hand them to the event loop.
CLAIM_THREADS = 8


def restart_delay(recent_crashes: int) -> float:
    """Seconds to wait before restarting a child that crashed ``recent_crashes`` times
    in a row, each within STABLE_AFTER_SECONDS of its start."""
    if recent_crashes <= 0:
        return 0.0
    return min(MAX_RESTART_DELAY, 0.5 * 2 ** (recent_crashes - 1))


@dataclass
class Child:
    name: str
    args: list[str]
    stop_grace: float = STOP_GRACE_SECONDS
    env: dict[str, str] = field(default_factory=dict)  # on top of this process's environment
    pass_fds: tuple[int, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0
    restart_at: float | None = None
    restarts: int = field(default=0)
    # Where the child listens: the children after it are started once it accepts there.
    ready_at: tuple[str, int] | None = None


class Supervisor:
    def __init__(self, children: list[Child], *, log: Any) -> None:
        self.children = children
        self.log = log
        self.stopping = False

    def start(self, child: Child) -> None:
        # Own session: a Ctrl-C in the terminal reaches this supervisor only, which
        # then stops each child once, in order (the worker drains).
        child.process = subprocess.Popen(
            child.args, start_new_session=True, pass_fds=child.pass_fds,
            env={**os.environ, **child.env} if child.env else None,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        self.log(f"started {child.name} (pid {child.process.pid})")

    def run(self) -> None:
        for child in self.children:
            if self.stopping:
                return
            self.start(child)
            if child.ready_at is not None:
                self.wait_ready(child)
        while not self.stopping:
            time.sleep(POLL_SECONDS)
            self.check()

    def wait_ready(self, child: Child) -> None:
        """Until ``child`` accepts connections at ``ready_at`` (as the in-process emulator
        did before the web server started), it exits, or READY_TIMEOUT_SECONDS pass."""
        assert child.process is not None and child.ready_at is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not self.stopping and child.process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(child.ready_at, timeout=POLL_SECONDS).close()
                return
            except OSError:
                time.sleep(POLL_SECONDS / 5)
        if not self.stopping:
            self.log(f"{child.name} is not listening on {child.ready_at[0]}:{child.ready_at[1]}; "
                     "starting the others anyway")

    def check(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if self.stopping:
                return
            assert child.process is not None
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self.start(child)
                continue
            code = child.process.poll()
            if code is None:
                continue
            metrics.process_ended(child.process.pid, child.env.get(metrics.MULTIPROCESS_DIR_ENV))
            quick = now - child.started_at < STABLE_AFTER_SECONDS
            child.crashes = child.crashes + 1 if quick else 1
            delay = restart_delay(child.crashes - 1)
            self.log(f"{child.name} (pid {child.process.pid}) exited with code {code}; "
                     f"restarting in {delay:g}s")
            child.restart_at = now + delay

    def stop(self, *_: Any) -> None:
        """SIGTERM every child at once, then wait for each until its own grace (counted
        from this moment, not from the end of the previous wait) and kill what is left:
        N draining workers take one drain, not N, so compose's stop_grace_period holds."""
        if self.stopping:
            return
        self.stopping = True
        began = time.monotonic()
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.0, began + child.stop_grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} did not stop within {child.stop_grace:g}s; killing it")
                child.process.kill()
                child.process.wait(timeout=10)


# --- What to start ------------------------------------------------------------------------


def worker_node(index: int) -> str:
    """Celery node name of the ``index``-th worker process (1-based); ``%h`` is the host,
    so the names are unique per machine or container, and stable across restarts."""
    return f"worker{index}@%h"


def side_node(index: int) -> str:
    """Celery node name of the ``index``-th side worker process (titles)."""
    return f"side{index}@%h"


def claim_threads(concurrency: int) -> int:
    """Celery pool threads of a worker that streams ``concurrency`` answers: they only
    claim answers for the event loop, so a few suffice however many it streams."""
    return min(concurrency, CLAIM_THREADS)


def worker_command(index: int, *, concurrency: int) -> list[str]:
    """The Celery worker as runstack starts it. Its few pool threads only claim answers
    and hand them to the process's event loop, which streams up to ``concurrency`` of
    them at once (WORKER_LIVE_ANSWERS, set by ``worker_children``)."""
    return [sys.executable, "-m", "celery", "-A", "chatsite", "worker", "--pool", "threads",
            "--concurrency", str(claim_threads(concurrency)), "--loglevel", "INFO",
            "--hostname", worker_node(index), "-Q", settings.CELERY_TASK_DEFAULT_QUEUE]


def side_worker_command(index: int, *, concurrency: int) -> list[str]:
    """The side worker: ``concurrency`` (SIDE_CALL_CONCURRENCY) threads that make the
    side calls to the provider (titles), from the side queues only. The answer workers
    consume the default queue only (``-Q``), so a title never takes a claim thread."""
    return [sys.executable, "-m", "celery", "-A", "chatsite", "worker", "--pool", "threads",
            "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--hostname", side_node(index), "-Q", ",".join(side_queues(settings.CELERY_TASK_ROUTES))]


def web_command(*, host: str, port: int, concurrency: int, fd: int | None = None) -> list[str]:
    """A web child: ``runstack --serve``, on the inherited listening socket ``fd`` when
    given, else on its own ``host:port``."""
    args = [sys.executable, MANAGE_PY, "runstack", "--serve", "--host", host, "--port", str(port),
            "--worker-concurrency", str(concurrency)]
    return args + (["--fd", str(fd)] if fd is not None else [])


def web_children(count: int, *, listener: socket.socket, host: str, port: int,
                 concurrency: int) -> list[Child]:
    fd = listener.fileno()
    return [Child(f"web{index}", web_command(host=host, port=port, concurrency=concurrency, fd=fd),
                  pass_fds=(fd,))
            for index in range(1, count + 1)]


def worker_children(count: int, *, concurrency: int) -> list[Child]:
    # A worker drains for WORKER_DRAIN_SECONDS, then ends what is left and exits.
    grace = settings.WORKER_DRAIN_SECONDS + STOP_GRACE_SECONDS
    return [Child(f"worker{index}", worker_command(index, concurrency=concurrency), stop_grace=grace,
                  env={"WORKER_LIVE_ANSWERS": str(concurrency)})
            for index in range(1, count + 1)]


def side_children() -> list[Child]:
    """One side worker per worker role: SIDE_CALL_CONCURRENCY side calls at once per
    runstack (per compose ``worker`` container). Its warm stop lets a title in flight end."""
    grace = settings.WORKER_DRAIN_SECONDS + STOP_GRACE_SECONDS
    return [Child("side1", side_worker_command(1, concurrency=settings.SIDE_CALL_CONCURRENCY),
                  stop_grace=grace)]


def share_metrics(web: list[Child], workers: list[Child], directory: str) -> socket.socket | None:
    """Each role's processes keep their metrics in a directory of their own under
    ``directory`` (prometheus-client's multiprocess mode, chatsite/metrics.py), and with
    WORKER_METRICS_PORT the workers share one listening socket, as the web processes share
    theirs: a scrape reaches any process of the role and gets the sums of the role's
    processes. Returns that socket (None: no worker metrics)."""
    for role, children in (("web", web), ("worker", workers)):
        path = os.path.join(directory, role)
        os.makedirs(path, exist_ok=True)
        for child in children:
            child.env[metrics.MULTIPROCESS_DIR_ENV] = path
    if not workers or not settings.WORKER_METRICS_PORT or not settings.METRICS_TOKEN:
        return None
    listener = listening_socket("0.0.0.0", settings.WORKER_METRICS_PORT)
    for child in workers:
        child.env[metrics.WORKER_METRICS_FD_ENV] = str(listener.fileno())
        child.pass_fds = (*child.pass_fds, listener.fileno())
    return listener


def emulator_children() -> list[Child]:
    """The offline demo model (``python -m emulator``) at EMULATOR_URL, when no provider
    is configured; none otherwise."""
    if not is_demo_mode():
        return []
    emulator = urlsplit(settings.EMULATOR_URL)
    host, port = emulator.hostname or "127.0.0.1", emulator.port or 8001
    return [Child("emulator", [sys.executable, "-m", "emulator", "--host", host,
                               "--port", str(port)], ready_at=(host, port))]


def listening_socket(host: str, port: int) -> socket.socket:
    """The one socket every web child accepts on (see the module docstring)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc}") from exc
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(LISTEN_BACKLOG)
    except OSError as exc:
        listener.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc}") from exc
    return listener


# --- PostgreSQL connections ---------------------------------------------------------------


@dataclass(frozen=True)
class PoolPlan:
    """Largest pool of each web, worker and side process, and what they add up to."""

    web_processes: int
    worker_processes: int
    web_pool: int
    worker_pool: int
    side_processes: int = 0
    side_pool: int = 0

    @property
    def total(self) -> int:
        return (self.web_processes * self.web_pool + self.worker_processes * self.worker_pool
                + self.side_processes * self.side_pool)

    def describe(self) -> str:
        terms = [f"{count} {role} × {pool}" for role, count, pool in (
            ("web", self.web_processes, self.web_pool),
            ("worker", self.worker_processes, self.worker_pool),
            ("side", self.side_processes, self.side_pool)) if count]
        return f"{' + '.join(terms)} = {self.total}"


def fit_pools(plan: PoolPlan, limit: int) -> PoolPlan:
    """The same processes with pools scaled down together until they fit in ``limit``
    connections (never below MIN_POOL_SIZE each); ``plan`` itself when it fits.

    Pools only open connections on demand, so this bounds the worst case: when every
    thread of every process writes at the same moment."""
    if plan.total <= limit:
        return plan
    scale = limit / plan.total

    def scaled(pool: int) -> int:
        return min(pool, max(MIN_POOL_SIZE, math.floor(pool * scale)))

    return PoolPlan(plan.web_processes, plan.worker_processes,
                    web_pool=scaled(plan.web_pool), worker_pool=scaled(plan.worker_pool),
                    side_processes=plan.side_processes, side_pool=scaled(plan.side_pool))


def pools_are_sized_by_role() -> bool:
    """True when each process sizes its own pool (PostgreSQL, pooling on, no DB_POOL_MAX)."""
    options = settings.DATABASES["default"].get("OPTIONS")
    pooled = isinstance(options, dict) and isinstance(options.get("pool"), dict)
    return pooled and not os.environ.get("DB_POOL_MAX", "").strip()


def server_connection_limit() -> int | None:
    """Connections the PostgreSQL server accepts from ordinary roles, less
    CONNECTION_HEADROOM; None when the server cannot be asked (the children will retry
    on their own). The supervisor's connection and pool are closed again afterwards."""
    from django.db import DatabaseError, connections

    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int"
                " - coalesce(current_setting('reserved_connections', true), '0')::int"
            )
            row = cursor.fetchone()
    except DatabaseError:
        return None
    finally:
        connection.close()
        if connection.alias in getattr(type(connection), "_connection_pools", {}):
            connection.close_pool()  # type: ignore[attr-defined]  # PostgreSQL backend only
    return int(row[0]) - CONNECTION_HEADROOM if row else None


class Command(BaseCommand):
    help = "Serve web, workers and (in demo mode) the offline model emulator, supervised."
    # Where the children pool their metrics (handle() makes it), and the workers' metrics
    # socket (share_metrics).
    metrics_dir = ""
    worker_metrics: socket.socket | None = None

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--worker-concurrency", type=int, default=WORKER_CONCURRENCY,
                            help="Threads (concurrent answers) of each Celery worker process.")
        parser.add_argument("--only", choices=ROLES,
                            help="Start only the web or only the worker processes "
                                 "(full topology; one container per role).")
        parser.add_argument("--ping-workers", action="store_true",
                            help="Exit 0 when every worker process of this host answers a "
                                 "ping (the worker container's healthcheck).")
        parser.add_argument("--serve", action="store_true",
                            help="Serve the web part in this process (the supervised child).")
        parser.add_argument("--fd", type=int, help=(
            "With --serve: accept on this inherited listening socket instead of binding "
            "--host/--port."))

    def handle(self, *args: Any, **options: Any) -> None:
        if options["serve"]:
            self.serve(options)
            return
        if options["ping_workers"]:
            self.ping_workers()
            return
        if settings.EMBEDDED and options["only"]:
            raise CommandError("--only needs the full topology (DATABASE_URL and REDIS_URL): "
                               "embedded mode is one process")
        roles = (options["only"],) if options["only"] else ROLES
        listener = listening_socket(options["host"], options["port"]) if "web" in roles else None
        # Embedded mode is one process: its own metrics are all there is.
        self.metrics_dir = "" if settings.EMBEDDED else tempfile.mkdtemp(prefix="teamchat-metrics-")
        try:
            children = self.children(options, roles, listener)
            for child in children:
                child.env.update(self.local_site_url(options))
            supervisor = Supervisor(children, log=self.log)
            self.announce(options, roles)
            signal.signal(signal.SIGTERM, supervisor.stop)
            signal.signal(signal.SIGINT, supervisor.stop)
            try:
                supervisor.run()
            finally:
                supervisor.stop()
        finally:
            if listener is not None:
                listener.close()
            if self.worker_metrics is not None:
                self.worker_metrics.close()
            if self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def log(self, line: str) -> None:
        self.stdout.write(f"runstack: {line}")
        self.stdout.flush()

    def announce(self, options: dict[str, Any], roles: tuple[str, ...]) -> None:
        provider = "offline demo model (no OPENAI_API_KEY)" if is_demo_mode() else "OpenAI-compatible API"
        if settings.EMBEDDED:
            mode = "embedded (SQLite, in-memory channel layer, in-process worker)"
        else:
            parts = []
            if "web" in roles:
                parts.append(f"{settings.WEB_PROCESSES} web")
            if "worker" in roles:
                parts.append(f"{settings.WORKER_PROCESSES} Celery worker")
                parts.append("1 side worker (titles)")
            if not options["only"]:
                parts.append("beat")
            mode = f"full topology ({', '.join(parts)} processes on PostgreSQL and Redis)"
        serving = f"Serving http://{options['host']}:{options['port']} in" if "web" in roles else "Running"
        self.stdout.write(f"{serving} {mode}; answers from {provider}.")
        if settings.EMAIL_BACKEND in UNDELIVERED_BACKENDS:
            self.stdout.write(
                f"WARNING: email is not sent ({settings.EMAIL_BACKEND}): every message, with "
                "its sign-in, password-reset and invitation links, is printed below instead. "
                "Set EMAIL_BACKEND and EMAIL_HOST to send mail.")
        if not settings.SITE_URL_CONFIGURED and not (settings.EMBEDDED or settings.DEBUG):
            self.stdout.write(f"WARNING: SITE_URL is not set; emailed links point at "
                              f"{settings.SITE_URL}. Set it to the address people open.")

    def local_site_url(self, options: dict[str, Any]) -> dict[str, str]:
        """Embedded or DEBUG without SITE_URL: emailed links point at this server's port."""
        if settings.SITE_URL_CONFIGURED or not (settings.EMBEDDED or settings.DEBUG):
            return {}
        return {"SITE_URL": f"http://127.0.0.1:{options['port']}"}

    def children(self, options: dict[str, Any], roles: tuple[str, ...],
                 listener: socket.socket | None) -> list[Child]:
        concurrency = options["worker_concurrency"]
        web: list[Child] = []
        if listener is not None:
            count = 1 if settings.EMBEDDED else settings.WEB_PROCESSES
            web = web_children(count, listener=listener, host=options["host"],
                               port=options["port"], concurrency=concurrency)
        if settings.EMBEDDED:
            return emulator_children() + web
        workers = (worker_children(settings.WORKER_PROCESSES, concurrency=concurrency)
                   if "worker" in roles else [])
        # The worker role's side pool: titles never take a thread that claims answers.
        side = side_children() if "worker" in roles else []
        whole_stack = roles == ROLES
        self.size_pools(web, workers, side, concurrency=concurrency, whole_stack=whole_stack)
        if self.metrics_dir:
            # The side worker counts with the worker role (its titles' spend, its errors).
            self.worker_metrics = share_metrics(web, workers + side, self.metrics_dir)
        if not whole_stack:
            return web + workers + side
        children = emulator_children()
        children.extend(workers + side)
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule there
        children.append(Child("beat", [
            sys.executable, "-m", "celery", "-A", "chatsite", "beat", "--loglevel", "WARNING",
            "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")]))
        return children + web

    def size_pools(self, web: list[Child], workers: list[Child], side: list[Child], *,
                   concurrency: int, whole_stack: bool) -> None:
        """Keep every process's pool together within what the server accepts.

        Only the whole stack can be fitted: a compose container (``--only``) does not
        know how many others share the server, so it reports its own worst case (and
        says so when that alone is more than the server accepts: set DB_POOL_MAX)."""
        if not pools_are_sized_by_role():
            return
        plan = PoolPlan(len(web), len(workers), web_pool_size(), worker_pool_size(claim_threads(concurrency)),
                        side_processes=len(side),
                        side_pool=worker_pool_size(settings.SIDE_CALL_CONCURRENCY))
        limit = server_connection_limit()
        if limit is None:
            self.log(f"PostgreSQL connections at most {plan.describe()}")
            return
        fitted = fit_pools(plan, limit) if whole_stack else plan
        if fitted == plan:
            advice = "" if plan.total <= limit else "; set DB_POOL_MAX (docs/scaling.md)"
            scope = "" if whole_stack else " from this role's processes"
            self.log(f"PostgreSQL connections at most {plan.describe()}{scope} "
                     f"(server allows {limit}){advice}")
            return
        self.log(f"PostgreSQL connections at most {plan.describe()} would pass the {limit} "
                 f"the server allows; pools lowered to {fitted.describe()}")
        for child in web:
            child.env["DB_POOL_MAX"] = str(fitted.web_pool)
        for child in workers:
            child.env["DB_POOL_MAX"] = str(fitted.worker_pool)
        for child in side:
            child.env["DB_POOL_MAX"] = str(fitted.side_pool)

    def ping_workers(self) -> None:
        """Every worker process runstack starts on this host (WORKER_PROCESSES of them, and
        the side worker) answers a ping within 10 s, or the command fails naming the silent
        ones."""
        from celery.utils.nodenames import host_format

        workers = [host_format(worker_node(i)) for i in range(1, settings.WORKER_PROCESSES + 1)]
        side = [host_format(side_node(1))]
        nodes = workers + side
        replies = app.control.ping(destination=nodes, timeout=10)
        answered = {name for reply in replies for name in reply}
        silent = [node for node in nodes if node not in answered]
        if silent:
            raise CommandError(f"no answer from {', '.join(silent)}")
        self.stdout.write(f"{len(workers)} worker processes and {len(side)} side process answered")

    def serve(self, options: dict[str, Any]) -> None:
        if settings.EMBEDDED:
            start_worker(concurrency=min(options["worker_concurrency"], 100))
            start_side_worker()  # titles: their own SIDE_CALL_CONCURRENCY threads
            start_reaper()
            # Beat's daily job (CELERY_BEAT_SCHEDULE); embedded mode runs no beat.
            start_periodic(move_orgs_off_retiring_models, every=24 * 3600.0, name="retirements")
            # Beat's hourly clean-up of expired exports, leftover uploads and dead jobs.
            start_periodic(clean_up_data_jobs, every=3600.0, name="data-jobs")
        asyncio.run(self._serve(options["host"], options["port"], options["fd"]))

    async def _serve(self, host: str, port: int, fd: int | None) -> None:
        if settings.EMBEDDED:
            # The in-memory channel layer lives on this loop; workers publish onto it.
            embedded_loop_started.send(sender=Command, loop=asyncio.get_running_loop())
        server = uvicorn.Server(server_config(host=host, port=port))
        if fd is None:
            await server.serve()
        else:
            # socket(fileno=) reads the family from the descriptor (uvicorn's own --fd
            # would take it for a Unix socket and misreport every client address).
            await server.serve(sockets=[socket.socket(fileno=fd)])


# Websocket frames over 1 MiB are refused by uvicorn before any of our code reads them.
WS_MAX_SIZE = 1_048_576


def server_config(*, host: str, port: int) -> uvicorn.Config:
    """uvicorn as every launcher runs it: 1 MiB websocket frames, proxy headers
    believed only from TRUSTED_PROXIES, and link secrets masked in its access lines.

    ``forwarded_allow_ips`` is always a string: None would make uvicorn trust
    $FORWARDED_ALLOW_IPS or, without it, 127.0.0.1; "" (TRUSTED_PROXIES empty) trusts
    no proxy at all.
    """
    return uvicorn.Config(
        "chatsite.asgi:application", host=host, port=port, log_level="info",
        log_config=uvicorn_log_config(),
        ws_max_size=WS_MAX_SIZE, ws_per_message_deflate=False, lifespan="off",
        proxy_headers=True, forwarded_allow_ips=",".join(settings.TRUSTED_PROXIES),
    )
