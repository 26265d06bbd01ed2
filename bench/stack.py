"""The processes under test: preflight checks, database, emulator, web and worker.

Every child runs in its own session (process group) so that tearing it down also ends
anything it forked; the group ids are the children's own pids, recorded here, and
nothing else is ever signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/teamchat_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_SECRET_KEY = "bench-only-secret-key"


class BenchError(RuntimeError):
    """A failure with a message meant for the person running the bench."""


def configure_environment() -> None:
    """Same defaults as ``make bench``, so ``python -m bench`` also works on its own."""
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    os.environ.setdefault("SECRET_KEY", DEFAULT_SECRET_KEY)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    # Production-like: no debug query log, default hosts (the websocket Origin check
    # and the in-process test client both use 127.0.0.1).
    os.environ["DEBUG"] = "false"
    os.environ["ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Demo mode everywhere, this process included: answers come from the emulator only.
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        os.environ.pop(name, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- preflight ---------------------------------------------------------------------------


def _conninfo(url: str, dbname: str | None = None) -> dict[str, object]:
    parts = urlsplit(url)
    info: dict[str, object] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "user": parts.username or "postgres",
        "dbname": dbname if dbname is not None else parts.path.lstrip("/"),
        "connect_timeout": 3,
    }
    if parts.password:
        info["password"] = parts.password
    return info


def check_postgres(url: str) -> None:
    import psycopg

    info = _conninfo(url, "postgres")
    try:
        with psycopg.connect(**info) as conn:  # type: ignore[arg-type]
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        raise BenchError(
            f"PostgreSQL is not reachable at {info['host']}:{info['port']} as user "
            f"{info['user']!r} ({str(error).strip().splitlines()[0]}). Start PostgreSQL "
            "(for example `service postgresql start`) or set DATABASE_URL."
        ) from error


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as error:
        raise BenchError(
            f"Redis is not reachable at {url} ({error}). Start Redis "
            "(for example `service redis-server start`) or set REDIS_URL."
        ) from error


def flush_redis(url: str) -> None:
    """Empty the bench's own Redis database: a queue left by an aborted run would
    otherwise be redelivered to the new worker and add load to the first step."""
    import redis

    redis.Redis.from_url(url, socket_timeout=5).flushdb()


def ensure_database(url: str) -> bool:
    """Create the bench database if it is missing; True when it was created."""
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise BenchError(f"DATABASE_URL {url!r} names no database.")
    with psycopg.connect(**_conninfo(url, "postgres"), autocommit=True) as conn:  # type: ignore[arg-type]
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def migrate(log_dir: Path) -> None:
    log = log_dir / "migrate.log"
    with log.open("wb") as out:
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT, timeout=600,
        )
    if result.returncode != 0:
        raise BenchError(f"manage.py migrate failed:\n{tail(log)}")


def vacuum(conn) -> str:  # type: ignore[no-untyped-def]
    """VACUUM (ANALYZE) the bench database before measuring, as autovacuum would have
    between runs on a production server. Returns this server's autovacuum setting: with
    it off (as on this machine's development PostgreSQL) every earlier run's dead row
    versions would otherwise stay in the indexes each turn reads."""
    conn.execute("VACUUM (ANALYZE)")
    row = conn.execute("SHOW autovacuum").fetchone()
    return str(row[0]) if row else "unknown"


def pg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(**_conninfo(url), autocommit=True)  # type: ignore[arg-type]


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    {line}" for line in text[-lines:])


# --- child processes ---------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Stack:
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    emulator_url: str = ""
    web_ports: list[int] = field(default_factory=list)
    worker_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        atexit.register(self.stop)

    def _env(self) -> dict[str, str]:
        env = os.environ.copy()
        # Demo mode: no key, answers come from EMULATOR_URL + /v1.
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORGANIZATION", "OPENAI_PROJECT"):
            env.pop(name, None)
        env["EMULATOR_URL"] = self.emulator_url
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.log_dir / f"{name}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            args, cwd=ROOT, env={**self._env(), **(env or {})}, stdout=handle, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        child = Child(name, process, log, handle)
        self.children.append(child)
        return child

    def start_emulator(self, *, tokens_per_second: float, think_ms: int, reply_tokens: int,
                       chunk_tokens: int) -> Child:
        port = free_port()
        self.emulator_url = f"http://127.0.0.1:{port}"
        think = ",".join(f"{effort}={think_ms}" for effort in ("minimal", "low", "medium", "high"))
        child = self.spawn("emulator", [
            sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(port),
            "--tokens-per-second", f"{tokens_per_second:g}", "--chunk-tokens", str(chunk_tokens),
            "--think-ms", think, "--reply-tokens", str(reply_tokens), "--timestamps",
        ])
        self.wait_http(child, f"{self.emulator_url}/_emulator/config")
        return child

    def start_web(self, count: int = 1) -> list[Child]:
        """``count`` uvicorn processes, each on its own port: no load balancer in
        between, the clients spread themselves over ``web_ports``."""
        children = []
        for index in range(1, count + 1):
            port = free_port()
            child = self.spawn(f"web-{index}", [
                sys.executable, "-m", "uvicorn", "chatsite.asgi:application",
                "--host", "127.0.0.1", "--port", str(port),
                "--ws-per-message-deflate", "false", "--lifespan", "off",
                "--log-level", "warning", "--no-access-log",
                # As every launcher: 1 MiB websocket frames, proxies only from TRUSTED_PROXIES.
                "--ws-max-size", "1048576",
                "--forwarded-allow-ips", os.environ.get("TRUSTED_PROXIES", "").replace(" ", ""),
            # A tab of the per-turn step sends every few tens of milliseconds, far past a
            # person's 20 a minute; the limit is still checked on every send.
            ], env={"SENDS_PER_MINUTE": "100000"})
            self.wait_http(child, f"http://127.0.0.1:{port}/healthz", timeout=60)
            self.web_ports.append(port)
            children.append(child)
        return children

    def start_workers(self, concurrency: int, count: int = 1) -> list[Child]:
        """``count`` Celery processes on the same broker, each streaming up to
        ``concurrency`` answers on its event loop (claimed by runstack's few threads) from
        the default queue, and, as runstack adds to them, one side worker for the side
        calls' queues (titles), when settings route any there. Each has its own node name
        (two nodes with one name would answer each other's control messages)."""
        from django.conf import settings

        from chatsite.celery import side_queues
        from conversations.management.commands.runstack import claim_threads

        children = []
        for index in range(1, count + 1):
            name = f"bench-{os.getpid()}-{index}@{socket.gethostname()}"
            children.append(self.spawn(f"worker-{index}", [
                sys.executable, "-m", "celery", "-A", "chatsite", "worker", "--pool", "threads",
                "--concurrency", str(claim_threads(concurrency)), "--loglevel", "WARNING",
                "--hostname", name, "-Q", settings.CELERY_TASK_DEFAULT_QUEUE,
            ], env={"WORKER_LIVE_ANSWERS": str(concurrency)}))
            self.worker_names.append(name)
        queues = side_queues()
        if queues:
            name = f"bench-side-{os.getpid()}@{socket.gethostname()}"
            children.append(self.spawn("side-1", [
                sys.executable, "-m", "celery", "-A", "chatsite", "worker", "--pool", "threads",
                "--concurrency", str(settings.SIDE_CALL_CONCURRENCY), "--loglevel", "WARNING",
                "--hostname", name, "-Q", ",".join(queues),
            ]))
            self.worker_names.append(name)
        return children

    def start_reference(self, mode: str, *, flush_ms: int) -> tuple[list[Child], int]:
        """A reference server of ``bench.reference`` (``relay``, ``floor`` or ``hop``, the
        last two with their Celery worker, each on its own queue). Returns its processes
        and port."""
        port = free_port()
        server = self.spawn(f"{mode}-1", [
            sys.executable, "-m", "bench.reference", "--port", str(port), "--emulator", self.emulator_url,
            "--mode", mode, "--flush-ms", str(flush_ms),
        ])
        children = [server]
        if mode in ("floor", "hop"):
            from bench.reference import CLAIM_THREADS, app
            from bench.reference_hop import HOP_QUEUE

            name = f"{mode}-{os.getpid()}@{socket.gethostname()}"
            queue = HOP_QUEUE if mode == "hop" else "bench-reference"
            # The hop's worker streams: it needs the upstream and the flush window.
            children.append(self.spawn(f"{mode} worker-1", [
                sys.executable, "-m", "celery", "-A", "bench.reference", "worker", "--pool", "threads",
                "--concurrency", str(CLAIM_THREADS), "--loglevel", "WARNING", "--hostname", name,
                "--queues", queue,
            ], env={"STREAM_FLUSH_MS": str(flush_ms)}))
            self._wait_for_ping(app, {name}, 60.0)
        self.wait_http(server, f"http://127.0.0.1:{port}/healthz")
        return children, port

    def stop_children(self, names: tuple[str, ...]) -> None:
        """Stop the children whose names start with any of ``names`` (the product's web
        and workers before the reference servers run on the same cores)."""
        keep: list[Child] = []
        stopping: list[Child] = []
        for child in self.children:
            (stopping if child.name.startswith(names) else keep).append(child)
        self.children = stopping
        self.stop()
        self.children = keep

    def wait_for_workers(self, timeout: float = 60.0) -> None:
        """Until every worker answers a control ping: a worker still starting when the
        load begins would leave its share of the answers to the others."""
        from chatsite.celery import app

        self._wait_for_ping(app, set(self.worker_names), timeout)

    def _wait_for_ping(self, app: Any, names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = set(names)
        while waiting:
            self.check_alive()
            if time.monotonic() >= deadline:
                raise BenchError(f"workers {sorted(waiting)} did not answer a ping within "
                                 f"{timeout:.0f}s; see their logs under {self.log_dir}")
            replies = app.control.ping(destination=sorted(waiting), timeout=1.0) or []
            for reply in replies:
                waiting -= set(reply)

    def wait_http(self, child: Child, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                last = f"HTTP {error.code}"
            except OSError as error:
                last = str(error)
            time.sleep(0.2)
        raise BenchError(f"{child.name} did not answer {url} within {timeout:.0f}s ({last}):\n{tail(child.log)}")

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise BenchError(
                    f"the {child.name} process (pid {child.pid}) exited with code "
                    f"{child.process.returncode}:\n{tail(child.log)}"
                )

    def pids(self) -> dict[str, int]:
        return {child.name: child.pid for child in self.children}

    def first_pid(self, role: str) -> int:
        """The pid of the first process of ``role`` ("web", "worker")."""
        return next(child.pid for child in self.children if child.name.startswith(f"{role}-"))

    def stop(self) -> None:
        children, self.children = self.children, []
        for child in children:
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.process.wait(timeout=5)
            child.handle.close()
