"""Real processes for the chaos suite: Celery workers, the ASGI app under uvicorn and a
private redis-server, all against this run's test database and the emulator over HTTP.

Scale: each case has a ``fast`` variant, which every ``make test`` runs (a few kills,
stops and socket drops, one Redis restart), and a ``full`` one, marked ``chaos_full`` and
run only by ``make chaos`` (``CHAOS=full``): 50 kills, 50 stops, 200 socket drops. Every child is started in its own session and only the
processes started here are ever signalled, by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from chatsite.celery import side_queues
from tests.conftest import free_port, settings_module

ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("CHAOS", "").strip().lower() == "full"


def fast_and_full(name: str, fast: Any, full: Any) -> Any:
    """Parametrize ``name`` with a fast case (every run) and a full one (``make chaos``)."""
    return pytest.mark.parametrize(name, [
        pytest.param(fast, id="fast"),
        pytest.param(full, id="full", marks=pytest.mark.chaos_full),
    ])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos_full: runs only under `make chaos` (CHAOS=full)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL:
        return
    skip = pytest.mark.skip(reason="long chaos case: run `make chaos`")
    for item in items:
        if "chaos_full" in item.keywords:
            item.add_marker(skip)


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str,
             every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] or "postgres"
    if db["PASSWORD"]:
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Processes:
    """Children of this test, each in its own session, stopped at teardown."""

    log_dir: Path
    env: dict[str, str]
    children: list[Proc] = field(default_factory=list)
    count: int = 0

    def spawn(self, name: str, args: list[str], **env: str) -> Proc:
        self.count += 1
        log = self.log_dir / f"{self.count:03d}-{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, cwd=ROOT, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        proc = Proc(name, process, log)
        self.children.append(proc)
        return proc

    def worker(self, *, queue: str = "", concurrency: int = 16, **env: str) -> Proc:
        args = [sys.executable, "-m", "celery", "-A", "tests.chaos.celery_app", "worker",
                "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "WARNING",
                "--without-heartbeat", "--without-mingle", "--without-gossip",
                "--hostname", f"chaos-{os.getpid()}-{self.count}@%h"]
        if queue:
            # The run's answers and its side calls (titles, routed by celery_app to the
            # run's side queue): one worker for both, as the chaos cases count on it.
            args += ["-Q", ",".join([queue, *side_queues()])]
            env = {"CHAOS_QUEUE": queue, **env}
        proc = self.spawn("worker", args, **env)
        wait_for(lambda: "chaos worker ready" in proc.log.read_text(errors="replace") or not proc.alive(),
                 timeout=60, what="the worker to start", every=0.1)
        assert proc.alive(), proc.tail()
        return proc

    def web(self, **env: str) -> tuple[Proc, str]:
        import httpx2

        port = free_port()
        proc = self.spawn("web", [
            sys.executable, "-m", "uvicorn", "chatsite.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--ws-per-message-deflate", "false", "--lifespan", "off",
            "--log-level", "warning", "--ws-max-size", "1048576", "--forwarded-allow-ips", "",
        ], **env)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.alive(), proc.tail()
            try:
                return httpx2.get(f"{base}/healthz", timeout=2).status_code in (200, 503)
            except httpx2.HTTPError:
                return False

        wait_for(up, timeout=60, what="the web process to answer", every=0.2)
        return proc, base

    def redis(self, *, port: int | None = None, data_dir: Path) -> tuple[Proc, str]:
        """A private redis-server (never the shared one on 6379), append-only file on,
        as compose runs it."""
        import redis as redis_client

        port = port or free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        proc = self.spawn("redis", [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        ])
        url = f"redis://127.0.0.1:{port}/0"

        def up() -> bool:
            assert proc.alive(), proc.tail()
            try:
                return bool(redis_client.Redis.from_url(url, socket_timeout=1).ping())
            except redis_client.RedisError:
                return False

        wait_for(up, timeout=20, what="redis-server to start", every=0.05)
        return proc, url

    def signal(self, proc: Proc, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)

    def stop(self, proc: Proc, *, timeout: float = 30) -> int:
        self.signal(proc, signal.SIGTERM)
        try:
            return proc.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(proc, signal.SIGKILL)
            return proc.process.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in reversed(self.children):
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.process.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path, emulator: Any, transactional_db: None) -> Iterator[Processes]:
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", "DJANGO_SETTINGS_MODULE"}
    }
    # Typed from the settings literal, whose CONFIG mixes lists and strings.
    channel_layer: dict[str, Any] = django_settings.CHANNEL_LAYERS["default"]
    env.update(
        # The test process's own settings module (chatsite.settings_test under make test):
        # a password hashed here must verify in the children.
        DJANGO_SETTINGS_MODULE=settings_module(),
        DATABASE_URL=database_url(),
        REDIS_URL=django_settings.REDIS_URL,
        SECRET_KEY=django_settings.SECRET_KEY,
        EMULATOR_URL=django_settings.EMULATOR_URL,
        CHANNEL_PREFIX=channel_layer["CONFIG"]["prefix"],
        # The reaper runs in the test; a dead worker's lease lapses 10 s after its
        # last renewal (the shortest lease the settings allow).
        STREAM_LEASE_SECONDS="10",
        STREAM_CHECKPOINT_SECONDS="1",
        SENDS_PER_MINUTE="10000",
        MAX_LIVE_ANSWERS_PER_USER="1000",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    procs = Processes(log_dir=tmp_path, env=env)
    yield procs
    procs.stop_all()


def tab_for(user: Any, base: str) -> Any:
    """A browser tab signed in as ``user`` on the web process at ``base``."""
    from django.test import Client

    from tests.chaos.tabs import Tab

    client = Client()
    client.force_login(user)
    return Tab(ws_url=base.replace("http", "ws", 1) + "/ws/chat/", origin=base,
               cookie=f"sessionid={client.cookies['sessionid'].value}")


@pytest.fixture
def many_sends(settings: Any) -> None:
    """The chaos suite sends far more than one person may per minute."""
    settings.SENDS_PER_MINUTE = 10_000
    settings.MAX_LIVE_ANSWERS_PER_USER = 1_000
