"""Static files say ``X-Content-Type-Options: nosniff`` over real HTTP, served by the app
(chatsite.asgi) and through the checked-in nginx config: a browser then never runs a file
as script or style unless it was served as one."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.conftest import free_port, serve_asgi
from tests.scaleout.test_proxy import local_copy

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
PATHS = ["/static/js/chat.js", "/static/css/app.css", "/static/no-such-file.js", "/accounts/login/"]


@pytest.fixture
def app() -> Iterator[str]:
    with serve_asgi() as url:
        yield url


def nosniff_headers(url: str) -> list[str]:
    response = httpx2.get(url, timeout=10)
    return response.headers.get_list("x-content-type-options")


@pytest.mark.parametrize("path", PATHS)
def test_the_app_says_nosniff_once_on_static_files_and_pages(app: str, path: str) -> None:
    assert nosniff_headers(app + path) == ["nosniff"]


def test_a_missing_static_file_is_a_404_not_a_server_error(app: str) -> None:
    response = httpx2.get(app + "/static/no-such-file.js", timeout=10)
    assert (response.status_code, response.text) == (404, "Not Found")


@pytest.fixture
def proxy(app: str, tmp_path: Path) -> Iterator[str]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(local_copy((ROOT / "deploy" / "nginx.conf").read_text(), upstream=app,
                               port=port, run_dir=tmp_path))
    process = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path), "-e", "/dev/stderr",
                                "-g", "daemon off;"], stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx2.get(f"{base}/proxy-healthz", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("path", [*PATHS, "/proxy-healthz"])
def test_the_proxy_says_nosniff_once_on_everything(proxy: str, path: str) -> None:
    assert nosniff_headers(proxy + path) == ["nosniff"]
