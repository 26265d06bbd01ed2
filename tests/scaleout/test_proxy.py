"""The checked-in reverse-proxy config (deploy/nginx.conf, compose's `proxy` service) in
front of a web process, run by a local nginx: the chat websocket streams through it, and
the app sees the client address the proxy forwards (believed from TRUSTED_PROXIES)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx2
import pytest

from accounts.models import User
from conversations.models import Message
from llm.models import ModelProfile
from tests.chaos.conftest import tab_for, wait_for
from tests.conftest import free_port
from tests.scaleout.conftest import ScaledStack
from tests.scaleout.test_scale_out import ask_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
CLIENT = "203.0.113.7"


def local_copy(config: str, *, upstream: str, port: int, run_dir: Path) -> str:
    """deploy/nginx.conf pointed at ``upstream`` instead of compose's `web`, listening on
    loopback ``port``, writing under ``run_dir``; nothing else changed."""
    edits = {"http://web:8000": upstream, "listen 8080;": f"listen 127.0.0.1:{port};",
             "/tmp/": f"{run_dir}/"}
    for old, new in edits.items():
        assert old in config, f"deploy/nginx.conf no longer has {old!r}"
        config = config.replace(old, new)
    return config


@pytest.fixture
def proxy(stack: ScaledStack, tmp_path: Path) -> Any:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(local_copy((ROOT / "deploy" / "nginx.conf").read_text(),
                               upstream=stack.web_a, port=port, run_dir=tmp_path))
    proc = stack.processes.spawn("nginx", [NGINX, "-c", str(conf), "-p", str(tmp_path),
                                           "-e", "/dev/stderr", "-g", "daemon off;"])
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.alive(), proc.tail()
        try:
            return httpx2.get(f"{base}/proxy-healthz", timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False

    wait_for(up, timeout=20, what="nginx to listen", every=0.1)
    yield base
    stack.processes.stop(proc, timeout=10)


def test_the_proxy_forwards_the_chat_websocket_and_the_client_address(
    stack: ScaledStack, proxy: str, alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    health = httpx2.get(f"{proxy}/healthz", headers={"X-Forwarded-For": CLIENT}, timeout=10)
    assert health.status_code == 200
    web_a = stack.webs[0][0]
    # nginx appends its peer (127.0.0.1, trusted) and uvicorn takes the address before it.
    assert f'{CLIENT}:0 - "GET /healthz HTTP/1.1" 200' in stack.log(web_a)

    question, reply = ask_for(emulator, label="proxied")
    tab = tab_for(alice, proxy)

    async def ask() -> None:
        await tab.ask(question, tag="proxied")
        await tab.close()

    asyncio.run(asyncio.wait_for(ask(), timeout=60))
    message = Message.objects.get(pk=tab.answer.message_id)
    assert tab.answer.final is not None and tab.answer.final["type"] == "done"
    assert tab.answer.text == message.content == reply
    assert sorted(tab.answer.parts) == list(range(1, message.stream_seq + 1))


def test_the_proxy_never_serves_the_metrics(stack: ScaledStack, proxy: str) -> None:
    # Even with the right token: the public entrance has no metrics; Prometheus scrapes
    # each container directly.
    response = httpx2.get(f"{proxy}/metrics", timeout=10,
                          headers={"Authorization": "Bearer any-token"})
    assert response.status_code == 404
    assert "# TYPE" not in response.text
