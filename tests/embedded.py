"""`make run` with no settings, as a subprocess: SQLite under a temporary VAR_DIR, the
in-memory channel layer, the in-process worker and the emulator (shared by the embedded
mode tests)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_SETTINGS = {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "SECRET_KEY",
                   "DJANGO_SETTINGS_MODULE"}


@contextlib.contextmanager
def embedded_stack(var_dir: Path) -> Iterator[tuple[str, str]]:
    """Migrate and start ``runstack``; yield the site's and the emulator's base URLs."""
    port, emulator_port = free_port(), free_port()
    emulator = f"http://127.0.0.1:{emulator_port}"
    env = {key: value for key, value in os.environ.items() if key not in SERVER_SETTINGS}
    env.update(VAR_DIR=str(var_dir), EMULATOR_URL=emulator)
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env,
                   check=True)
    log_path = var_dir / "runstack.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([python, "manage.py", "runstack", "--port", str(port)],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{base}/healthz", timeout=1).status_code in (200, 503):
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("runstack did not start:\n" + log_path.read_text(errors="replace"))
            time.sleep(0.2)
        yield base, emulator
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def signed_in_client(base: str) -> httpx2.Client:
    """The fresh install's first account, signed up through the form."""
    client = httpx2.Client(base_url=base, follow_redirects=True)
    page = client.get("/accounts/signup/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    home = client.post("/accounts/signup/", data={
        "csrfmiddlewaretoken": token[1], "email": "demo@example.com",
        "password": "a long demo passphrase", "organization": "Demo"})
    assert home.status_code == 200
    assert "offline demo model" in home.text
    return client


def run_module_on_sqlite(module: str, var_dir: Path, *, timeout: float) -> str:
    """Run the test module ``module`` (a file path) again in a pytest of its own with no
    DATABASE_URL or REDIS_URL: the embedded mode's SQLite and in-memory layer. Every test
    but those named ``…embedded_sqlite_mode`` runs; returns pytest's output after
    asserting it passed."""
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "TEST_DATABASE_NAME"}}
    env.update(VAR_DIR=str(var_dir), SECRET_KEY=env.get("SECRET_KEY", "test-only-secret-key"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", module, "-q", "-p", "no:cacheprovider",
         "-k", "not embedded_sqlite_mode"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout
