"""The fixed cast and the real parts every test shares.

alice owns org A, bob is a member of org A, charlie owns org B. The emulator runs over
real HTTP; Celery workers, Redis and PostgreSQL are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from accounts.models import Membership, Organization, User

O3_MINI_SEED = importlib.import_module("conversations.migrations.0002_seed_o3_mini").O3_MINI

# The real OpenID provider of the SSO tests (the ``sso`` fixture).
pytest_plugins = ["tests.oidc"]

# Markers follow from what a test uses, so `make test-fast` (-m "not browser and not
# integration and not chaos and not slow and not soak") cannot miss a test that starts something.
BROWSER_FIXTURES = {"page", "chat_page", "browser"}  # Playwright and Chromium
INTEGRATION_FIXTURES = {
    "live_server_url", "share_site_url",  # uvicorn serving the ASGI app
    "celery_worker",  # a real Celery worker
    "processes", "scaled_stack", "stack",  # child processes: workers, web, redis-server
    "sso",  # the OpenID provider (node) and uvicorn (tests/oidc.py)
}
CHAOS_DIR = os.path.join(os.path.dirname(__file__), "chaos") + os.sep


def settings_module() -> str:
    """This run's settings module (``--ds``, exported by pytest-django), for the processes a
    test starts: a password hashed here must verify there. Not ``settings.SETTINGS_MODULE``,
    which reads None once a test has overridden a setting."""
    return os.environ["DJANGO_SETTINGS_MODULE"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
        # `slow` tests start real processes of their own (runstack, a pytest on SQLite).
        if fixtures & INTEGRATION_FIXTURES or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.integration)
        if str(item.path).startswith(CHAOS_DIR):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session", autouse=True)
def message_ids_unique_to_this_run(django_db_setup: None, django_db_blocker: Any) -> None:
    """Redis keys and channel groups are named after message ids, and a replay buffer
    lives ten minutes: ids that start where no earlier run's did keep runs apart."""
    from django.db import connection

    if connection.vendor != "postgresql" or not connection.settings_dict["NAME"].startswith("test_"):
        return  # SQLite, or no test in this run uses the database and none was created
    start = time.time_ns() // 1000  # microseconds: well inside bigint and the 2**62 frame limit
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('conversations_message', 'id'), %s)", [start]
        )


FLUSH_KEEPS = {"django_content_type", "auth_permission"}  # what post_migrate writes back


@pytest.fixture(scope="session", autouse=True)
def flush_by_delete() -> Iterator[None]:
    """A transactional test ends by emptying every table. On PostgreSQL Django does it with
    one TRUNCATE of all of them, which costs 0.1-0.3 s a test here (every table and index
    gets new files); a DELETE of the few rows a test wrote takes milliseconds and leaves the
    same thing: every table empty, sequences where they were. Foreign keys are checked at
    commit (Django makes them deferrable), when nothing is left to point at.

    A table with triggers of its own (the append-only audit log refuses DELETE) is still
    truncated, as Django would, since TRUNCATE fires no row trigger. Content types and
    permissions are kept: the flush's post_migrate would only write the same rows back
    (another 0.08 s a test), and no test writes either table. A test that resets sequences,
    or limits the flush with ``available_apps``, keeps Django's flush as it is."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush
    with_triggers: dict[str, set[str]] = {}  # per database: its tables with triggers

    def sql_flush(self: DatabaseOperations, style: Any, tables: Any, *,
                  reset_sequences: bool = False, allow_cascade: bool = False) -> list[str]:
        if reset_sequences or allow_cascade or not tables:
            return truncate(self, style, tables, reset_sequences=reset_sequences,
                            allow_cascade=allow_cascade)
        name = self.connection.settings_dict["NAME"]
        if name not in with_triggers:
            with self.connection.cursor() as cursor:
                # BEFORE DELETE row triggers only (tgtype bits: row 1, before 2, delete
                # 8): one may refuse the DELETE. An AFTER trigger (the messages' search
                # queue) is happy with one.
                cursor.execute("SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c "
                               "ON c.oid = t.tgrelid WHERE NOT t.tgisinternal "
                               "AND t.tgtype & 11 = 11")
                with_triggers[name] = {row[0] for row in cursor.fetchall()}
        emptied = sorted(set(tables) - FLUSH_KEEPS)
        guarded = [table for table in emptied if table in with_triggers[name]]
        statements = ["SET CONSTRAINTS ALL DEFERRED"] + [
            f"DELETE FROM {self.quote_name(table)}" for table in emptied if table not in guarded
        ]
        # TRUNCATE gives a table new files (0.1-0.3 s): only when a test wrote to one.
        statements += [
            f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM {self.quote_name(table)}) THEN "
            f"TRUNCATE {self.quote_name(table)} CASCADE; END IF; END $$"
            for table in guarded
        ]
        return statements

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "sql_flush", sql_flush)
        yield


@pytest.fixture(scope="session", autouse=True)
def one_ssl_context_per_settings() -> Iterator[None]:
    """Each HTTP client built here (the SDK's for every provider call, the emulator
    tests' own) loads the CA bundle into a new SSL context: 20 ms each where
    SSL_CERT_FILE names the system bundle, 15 s over the fast lane. Every request in the
    tests is plain HTTP to the emulator or a local server, so no context is ever used for
    a handshake: one per trust setting serves them all."""
    import httpcore2

    build = httpcore2.default_ssl_context
    built: dict[tuple[bool, str, str], ssl.SSLContext] = {}

    def default_ssl_context(*, _trust_env: bool = True) -> ssl.SSLContext:
        key = (_trust_env, os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
        if key not in built:
            built[key] = build(_trust_env=_trust_env)
        return built[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpcore2, "default_ssl_context", default_ssl_context)
        yield


_AMQP_CACHED = ("queues", "default_queue", "default_exchange", "router")


def _forget_celery_routing(app: Any) -> None:
    for name in _AMQP_CACHED:
        app.amqp.__dict__.pop(name, None)
    app.amqp._rtable = None


@pytest.fixture(scope="session", autouse=True)
def private_task_queue() -> Iterator[str]:
    """Tasks go to a queue only this run's worker consumes.

    The broker is a shared Redis database: a second test run against the same REDIS_URL
    (another checkout, a colleague's `make test`) would otherwise take this run's
    generate_reply tasks, find no such message in its own test database and ack them,
    leaving the answer pending here forever (and vice versa).
    """
    from chatsite.celery import app, side_queues
    from tests.queues import private_routes

    queue = f"tests-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    keys = ("task_default_queue", "task_default_exchange", "task_default_routing_key")
    saved = {key: app.conf[key] for key in (*keys, "task_routes")}
    app.conf.update({key: queue for key in keys})
    # Side calls (titles) to the run's own side queue(s), which celery_worker's side pool consumes.
    app.conf.task_routes = private_routes(queue, saved["task_routes"] or {})
    queues = [queue, *side_queues()]
    _forget_celery_routing(app)
    yield queue
    app.conf.update(saved)
    _forget_celery_routing(app)
    if str(app.conf.broker_url).startswith("redis"):
        import redis

        client = redis.Redis.from_url(app.conf.broker_url)
        try:
            for name in queues:
                client.delete(name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")
        finally:
            client.close()


@pytest.fixture(scope="session", autouse=True)
def compiled_statements_checked() -> Iterator[None]:
    """Every compiled hot statement (chatsite.compiled) is also compiled the slow way
    and compared, so a setting or value it silently depends on fails the test that
    changes it."""
    from chatsite import compiled

    compiled.CHECKS = True
    yield
    compiled.CHECKS = False


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings: Any) -> None:
    """Rate-limit counts live in the shared cache (Redis) for up to an hour, keyed by ids
    that a new test database hands out again: a prefix per test keeps every test's
    counts its own, without flushing a Redis database the broker also uses."""
    settings.RATELIMIT_CACHE_PREFIX = f"rl:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(autouse=True)
def site_url(settings: Any) -> str:
    """Emailed links are built on SITE_URL (never on the request's Host); Django's test
    client calls itself testserver. A live server sets its own address."""
    settings.SITE_URL = "http://testserver"
    return str(settings.SITE_URL)


@pytest.fixture(autouse=True)
def fresh_llm_clients() -> Iterator[None]:
    """SDK clients are cached per endpoint and key; settings change between tests."""
    from llm import client

    client.forget_clients()
    yield
    client.forget_clients()


@pytest.fixture(autouse=True)
def seeded_profiles(request: pytest.FixtureRequest) -> None:
    """A transactional test's closing flush empties every table, including the o3-mini
    profile a data migration seeds; put it back for every test that uses the database."""
    marker = request.node.get_closest_marker("django_db")
    names = request.fixturenames
    if marker is None and not {"db", "transactional_db"} & set(names):
        return
    transactional = "transactional_db" in names or bool(marker and marker.kwargs.get("transaction"))
    request.getfixturevalue("transactional_db" if transactional else "db")
    from llm.models import ModelProfile

    ModelProfile.objects.get_or_create(name=O3_MINI_SEED["name"], defaults=O3_MINI_SEED)


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Any]:
    from emulator.server import serve_in_thread

    handle = serve_in_thread()
    settings.EMULATOR_URL = handle.url
    yield handle
    handle.stop()


@pytest.fixture
def emulator(emulator_server: Any, settings: Any) -> Iterator[Any]:
    """The emulator with a clean journal, fast pacing and no reasoning pause."""
    settings.EMULATOR_URL = emulator_server.url
    state = emulator_server.emulator
    state.reset()
    saved = dict(vars(state.config))
    state.config.tokens_per_second = 2000
    state.config.think_ms = {"minimal": 0, "low": 0, "medium": 0, "high": 0}
    yield state
    state.reset()
    for key, value in saved.items():
        setattr(state.config, key, value)


def make_user(email: str, *, organization: Organization | None = None,
              role: str = Membership.Role.MEMBER, org_name: str = "") -> User:
    user = User.objects.create_user(email=email, password="correct horse battery staple")
    if organization is None:
        organization = Organization.objects.create(name=org_name or f"{email}'s org")
        role = Membership.Role.OWNER
    Membership.objects.create(user=user, organization=organization, role=role)
    return user


@pytest.fixture
def alice(db: None) -> User:
    return make_user("alice@example.com", org_name="Acme")


@pytest.fixture
def org_a(alice: User) -> Organization:
    return alice.memberships.get().organization


@pytest.fixture
def bob(org_a: Organization) -> User:
    return make_user("bob@example.com", organization=org_a)


@pytest.fixture
def charlie(db: None) -> User:
    return make_user("charlie@example.com", org_name="Other Corp")


@pytest.fixture
def o3_mini(db: None) -> Any:
    from llm.models import ModelProfile

    profile, _ = ModelProfile.objects.get_or_create(name=O3_MINI_SEED["name"], defaults=O3_MINI_SEED)
    return profile


@pytest.fixture
def second_session(transactional_db: None) -> Iterator[Any]:
    """Another PostgreSQL session on the test database (psycopg, autocommit), as another
    process's would be: to hold locks against the product's and end its backends for real."""
    import psycopg
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    config = connection.settings_dict
    with psycopg.connect(dbname=config["NAME"], host=config["HOST"] or None,
                         port=config["PORT"] or None, user=config["USER"] or None,
                         password=config["PASSWORD"] or None, autocommit=True) as session:
        yield session


def end_backend_waiting_for_a_lock(session: Any, timeout: float = 20.0) -> int:
    """Terminate the test database's other backends that wait for a lock (a command's, held
    up by ``session``), as a server restart or an administrator would: polls until at least
    one waits; returns how many were ended."""
    deadline = time.monotonic() + timeout
    while True:
        ended = session.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
            " current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchall()
        if ended:
            return len(ended)
        assert time.monotonic() < deadline, "nothing waited for the lock"
        time.sleep(0.05)


def money_snapshot() -> tuple[list[tuple[Any, Any]], list[tuple[Any, ...]]]:
    """The usage period rows (spent, reserved), sorted, and the reservations (amount,
    charged, settled_at), read in one snapshot (a title may be reserving meanwhile)."""
    from django.db import connection, transaction

    from billing.models import Reservation, UsagePeriod

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rows = sorted(UsagePeriod.objects.values_list("spent_usd", "reserved_usd"))
        reservations = list(Reservation.objects.values_list("amount_usd", "charged_usd",
                                                            "settled_at"))
    return rows, reservations


def purge_task_queue() -> None:
    from chatsite.celery import app

    with app.connection_for_write() as conn:
        app.control.purge(connection=conn)


def start_test_workers() -> tuple[Any, Any]:
    """The answers worker and the side pool (titles), on an empty queue, once both consume."""
    from chatsite.embedded import start_side_worker, start_worker

    purge_task_queue()
    worker, side = start_worker(concurrency=8), start_side_worker()  # answers; titles
    deadline = time.monotonic() + 10
    while not all(getattr(w, "consumer", None) and w.consumer.task_consumer for w in (worker, side)):
        if time.monotonic() > deadline:
            raise RuntimeError("Celery worker did not start")
        time.sleep(0.05)
    return worker, side


@pytest.fixture
def celery_worker(transactional_db: None, emulator: Any) -> Iterator[Any]:
    """A real Celery worker (threads pool) consuming from the Redis broker.
    (tests/browser shares one between its tests.)"""
    worker, side = start_test_workers()
    yield worker
    # Cold: a warm stop's close of the broker connection reads the pending BRPOP's reply
    # and can wait forever; each test has settled its answers by now.
    side.terminate(in_sighandler=False)
    worker.terminate(in_sighandler=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class LiveServer:
    """A uvicorn of ``running_asgi``, serving from a thread of this process."""

    url: str
    server: Any  # uvicorn.Server
    loop: asyncio.AbstractEventLoop

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no request or websocket is left running, as the server's own
        shutdown would (closing the connections still open after ``timeout``, then
        cancelling what still runs), and go on serving."""
        state = self.server.server_state

        def quiet(within: float) -> bool:
            deadline = time.monotonic() + within
            while state.tasks and time.monotonic() < deadline:
                time.sleep(0.02)
            return not state.tasks

        def close_connections() -> None:
            for connection in list(state.connections):
                connection.shutdown()

        def cancel_tasks() -> None:
            for task in list(state.tasks):
                task.cancel()

        if quiet(timeout):
            return
        self.loop.call_soon_threadsafe(close_connections)
        if not quiet(5.0):
            self.loop.call_soon_threadsafe(cancel_tasks)
            quiet(5.0)


@contextlib.contextmanager
def serve_asgi() -> Iterator[str]:
    """The real ASGI app (HTTP + websockets) served by uvicorn on a free port, with the
    launchers' frame cap and proxy trust; yields its base URL."""
    with running_asgi() as server:
        yield server.url


@contextlib.contextmanager
def running_asgi() -> Iterator[LiveServer]:
    """``serve_asgi``'s server itself, for a caller that keeps it between tests."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        "chatsite.asgi:application", host="127.0.0.1", port=port, log_level="warning",
        lifespan="off", ws_per_message_deflate=False, ws_max_size=1_048_576, proxy_headers=True,
        forwarded_allow_ips=",".join(settings.TRUSTED_PROXIES),
    )
    server = uvicorn.Server(config)
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", server=server, loop=loops[0])
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def asgi_server() -> Iterator[LiveServer]:
    """One uvicorn for the session: nothing of a test is baked into it (the app reads
    settings per request; SITE_URL is set per test), and each test ends by waiting for
    its requests and sockets to end (``LiveServer.settle``)."""
    with running_asgi() as server:
        yield server


@pytest.fixture
def live_server_url(asgi_server: LiveServer, celery_worker: Any, settings: Any) -> Iterator[str]:
    """The real ASGI app served by uvicorn, with a Celery worker running; emailed links
    point at it. Nothing the test opened is still running when its tables are emptied."""
    settings.SITE_URL = asgi_server.url
    yield asgi_server.url
    asgi_server.settle()
