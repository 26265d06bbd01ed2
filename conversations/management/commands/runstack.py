"""Serve the product: web, workers and (without an API key) the offline demo model.

This command supervises: it starts each part as a child process, restarts any child
that exits on its own (a crash, an OOM kill) within ``MAX_RESTART_DELAY`` seconds, and
on SIGTERM/SIGINT stops them all, giving the Celery worker WORKER_DRAIN_SECONDS to
finish the answers it is streaming.

Embedded (no DATABASE_URL / REDIS_URL): one child runs the ASGI server, a Celery worker
thread pool, the reaper and the emulator (the in-memory broker and channel layer only
work within one process). Full topology: the web child (uvicorn), a Celery worker, beat
and, in demo mode, the emulator, each its own process. ``--serve`` runs the web part in
this process instead (what the web child runs).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand

from conversations.llm import is_demo_mode

MANAGE_PY = str(Path(settings.BASE_DIR) / "manage.py")
POLL_SECONDS = 0.25
# A child that keeps crashing right after its start is restarted after 0.5, 1, 2 s (never
# more): a crash loop does not spin a core, and with the ~2 s a child takes to start,
# even then it serves again within 5 s. A single crash is restarted at the next poll.
MAX_RESTART_DELAY = 2.0
STABLE_AFTER_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0


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
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0
    restart_at: float | None = None
    restarts: int = field(default=0)


class Supervisor:
    def __init__(self, children: list[Child], *, log: Any) -> None:
        self.children = children
        self.log = log
        self.stopping = False

    def start(self, child: Child) -> None:
        # Own session: a Ctrl-C in the terminal reaches this supervisor only, which
        # then stops each child once, in order (the worker drains).
        child.process = subprocess.Popen(child.args, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None
        self.log(f"started {child.name} (pid {child.process.pid})")

    def run(self) -> None:
        for child in self.children:
            self.start(child)
        while not self.stopping:
            time.sleep(POLL_SECONDS)
            self.check()

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
            quick = now - child.started_at < STABLE_AFTER_SECONDS
            child.crashes = child.crashes + 1 if quick else 1
            delay = restart_delay(child.crashes - 1)
            self.log(f"{child.name} (pid {child.process.pid}) exited with code {code}; "
                     f"restarting in {delay:g}s")
            child.restart_at = now + delay

    def stop(self, *_: Any) -> None:
        if self.stopping:
            return
        self.stopping = True
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=child.stop_grace)
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} did not stop within {child.stop_grace:g}s; killing it")
                child.process.kill()
                child.process.wait(timeout=10)


class Command(BaseCommand):
    help = "Serve web, workers and (in demo mode) the offline model emulator, supervised."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--worker-concurrency", type=int, default=200)
        parser.add_argument("--serve", action="store_true",
                            help="Serve the web part in this process (the supervised child).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["serve"]:
            self.serve(options)
            return
        supervisor = Supervisor(self.children(options), log=self.log)
        mode = ("embedded (SQLite, in-memory channel layer, in-process worker)" if settings.EMBEDDED
                else "full topology (PostgreSQL, Redis, Celery worker and beat processes)")
        provider = "offline demo model (no OPENAI_API_KEY)" if is_demo_mode() else "OpenAI-compatible API"
        self.stdout.write(f"Serving http://{options['host']}:{options['port']} in {mode}; answers from {provider}.")
        signal.signal(signal.SIGTERM, supervisor.stop)
        signal.signal(signal.SIGINT, supervisor.stop)
        try:
            supervisor.run()
        finally:
            supervisor.stop()

    def log(self, line: str) -> None:
        self.stdout.write(f"runstack: {line}")
        self.stdout.flush()

    def children(self, options: dict[str, Any]) -> list[Child]:
        python = sys.executable
        web = Child("web", [python, MANAGE_PY, "runstack", "--serve", "--host", options["host"],
                            "--port", str(options["port"]),
                            "--worker-concurrency", str(options["worker_concurrency"])])
        if settings.EMBEDDED:
            return [web]
        children = []
        if is_demo_mode():
            emulator = urlsplit(settings.EMULATOR_URL)
            children.append(Child("emulator", [
                python, "-m", "emulator", "--host", emulator.hostname or "127.0.0.1",
                "--port", str(emulator.port or 8001)]))
        children.append(Child("worker", [
            python, "-m", "celery", "-A", "chatsite", "worker", "--pool", "threads",
            "--concurrency", str(options["worker_concurrency"]), "--loglevel", "INFO"],
            stop_grace=settings.WORKER_DRAIN_SECONDS + STOP_GRACE_SECONDS))
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule there
        children.append(Child("beat", [
            python, "-m", "celery", "-A", "chatsite", "beat", "--loglevel", "WARNING",
            "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")]))
        children.append(web)
        return children

    def serve(self, options: dict[str, Any]) -> None:
        if settings.EMBEDDED:
            from chatsite.embedded import start_reaper, start_worker

            if is_demo_mode():
                from emulator.server import serve_in_thread

                emulator = urlsplit(settings.EMULATOR_URL)
                serve_in_thread(host=emulator.hostname or "127.0.0.1", port=emulator.port or 8001)
            start_worker(concurrency=min(options["worker_concurrency"], 100))
            start_reaper()
        asyncio.run(self._serve(options["host"], options["port"]))

    async def _serve(self, host: str, port: int) -> None:
        from conversations.realtime import use_event_loop

        if settings.EMBEDDED:
            # The in-memory channel layer lives on this loop; workers publish onto it.
            use_event_loop(asyncio.get_running_loop())
        await uvicorn.Server(server_config(host=host, port=port)).serve()


# Websocket frames over 1 MiB are refused by uvicorn before any of our code reads them.
WS_MAX_SIZE = 1_048_576


def server_config(*, host: str, port: int) -> uvicorn.Config:
    """uvicorn as every launcher runs it: 1 MiB websocket frames, and proxy headers
    believed only from TRUSTED_PROXIES.

    ``forwarded_allow_ips`` is always a string: None would make uvicorn trust
    $FORWARDED_ALLOW_IPS or, without it, 127.0.0.1; "" (TRUSTED_PROXIES empty) trusts
    no proxy at all.
    """
    return uvicorn.Config(
        "chatsite.asgi:application", host=host, port=port, log_level="info",
        ws_max_size=WS_MAX_SIZE, ws_per_message_deflate=False, lifespan="off",
        proxy_headers=True, forwarded_allow_ips=",".join(settings.TRUSTED_PROXIES),
    )
