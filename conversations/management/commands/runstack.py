"""Serve the product: web, workers and (without an API key) the offline demo model.

Embedded (no DATABASE_URL / REDIS_URL): one process runs the ASGI server, a Celery
worker thread pool, the reaper and the emulator. Full topology: this process runs the
ASGI server and starts a Celery worker process, a beat process and, in demo mode, an
emulator process; stopping this command stops them all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand

from conversations.llm import is_demo_mode


class Command(BaseCommand):
    help = "Serve web, workers and (in demo mode) the offline model emulator."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--worker-concurrency", type=int, default=200)

    def handle(self, *args: Any, **options: Any) -> None:
        children: list[subprocess.Popen[bytes]] = []
        emulator = urlsplit(settings.EMULATOR_URL)
        if settings.EMBEDDED:
            from chatsite.embedded import start_reaper, start_worker

            if is_demo_mode():
                from emulator.server import serve_in_thread

                serve_in_thread(host=emulator.hostname or "127.0.0.1", port=emulator.port or 8001)
            start_worker(concurrency=min(options["worker_concurrency"], 100))
            start_reaper()
            mode = "embedded (SQLite, in-memory channel layer, in-process worker)"
        else:
            python = sys.executable
            if is_demo_mode():
                children.append(subprocess.Popen([
                    python, "-m", "emulator", "--host", emulator.hostname or "127.0.0.1",
                    "--port", str(emulator.port or 8001)]))
            children.append(subprocess.Popen([
                python, "-m", "celery", "-A", "chatsite", "worker", "--pool", "threads",
                "--concurrency", str(options["worker_concurrency"]), "--loglevel", "INFO"]))
            children.append(subprocess.Popen([
                python, "-m", "celery", "-A", "chatsite", "beat", "--loglevel", "WARNING",
                "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")]))
            mode = "full topology (PostgreSQL, Redis, Celery worker and beat processes)"
        provider = "offline demo model (no OPENAI_API_KEY)" if is_demo_mode() else "OpenAI-compatible API"
        self.stdout.write(f"Serving http://{options['host']}:{options['port']} in {mode}; answers from {provider}.")
        try:
            asyncio.run(self._serve(options["host"], options["port"]))
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

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
