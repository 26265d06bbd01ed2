"""The fixed cast and the real parts every test shares.

alice owns org A, bob is a member of org A, charlie owns org B. The emulator runs over
real HTTP; Celery workers, Redis and PostgreSQL are the real ones.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from accounts.models import Membership, Organization, User


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
    from conversations.models import ModelProfile

    return ModelProfile.objects.get(name="o3-mini")


@pytest.fixture
def celery_worker(transactional_db: None, emulator: Any) -> Iterator[Any]:
    """A real Celery worker (threads pool) consuming from the Redis broker."""
    from chatsite.celery import app
    from chatsite.embedded import start_worker

    with app.connection_for_write() as conn:
        app.control.purge(connection=conn)
    worker = start_worker(concurrency=8)
    deadline = time.monotonic() + 10
    while not getattr(worker, "consumer", None) or not worker.consumer.task_consumer:
        if time.monotonic() > deadline:
            raise RuntimeError("Celery worker did not start")
        time.sleep(0.05)
    yield worker
    worker.stop(in_sighandler=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server_url(celery_worker: Any) -> Iterator[str]:
    """The real ASGI app (HTTP + websockets) served by uvicorn on a free port."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        "chatsite.asgi:application", host="127.0.0.1", port=port, log_level="warning",
        lifespan="off", ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
