"""Run the emulator with uvicorn in a daemon thread (tests, dev server, demo mode)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.types import ASGIApp

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.state import Emulator


@dataclass
class EmulatorHandle:
    url: str  # e.g. "http://127.0.0.1:54321" (no trailing slash, no /v1)
    emulator: Emulator
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def config(self) -> EmulatorConfig:
        return self.emulator.config

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_in_thread(
    config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> EmulatorHandle:
    """Start the emulator on `host:port` (0 = a free port) and return once it accepts connections."""
    app = create_app(config)
    return serve_app_in_thread(app, app.state.emulator, host, port)


def serve_app_in_thread(
    app: ASGIApp, emulator: Emulator, host: str = "127.0.0.1", port: int = 0, url_path: str = ""
) -> EmulatorHandle:
    """Serve any ASGI app wrapping an emulator (e.g. one mounted under a prefix)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,  # never reconfigure the host process's logging
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"emulator-{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("emulator server failed to start")
        time.sleep(0.005)
    display_host = f"[{host}]" if ":" in host else host
    return EmulatorHandle(f"http://{display_host}:{bound_port}{url_path}", emulator, server, thread)
